// pooltarget is the benchmarks' Go target: it times its own Get/Put loops, so a tracer's
// attach and detach are never inside the measurement. Commands on stdin:
//
//	run sync|bucketed|bytes|parallel N   N Get+Put pairs; prints "ns_per_pair=X pairs=N"
//	paced RATE SECONDS             sync.Pool pairs at RATE per second; prints the rate reached
//	hold N                         takes N objects and keeps them; prints "held=N"
//	release                        gives every kept object back; prints "released=N"
//	shapes                         one Get/Put pair on each of the 16 ShapePool instantiations
//	exit
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

var buffers = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// BucketedPool is a generic pool of *[]T by size class, as Thanos' is.
type BucketedPool[T any] struct {
	buckets []sync.Pool
	sizes   []int
}

func NewBucketedPool[T any](minSize, maxSize int) *BucketedPool[T] {
	p := &BucketedPool[T]{}
	for s := minSize; s <= maxSize; s *= 2 {
		p.sizes = append(p.sizes, s)
	}
	p.buckets = make([]sync.Pool, len(p.sizes))
	return p
}

//go:noinline
func (p *BucketedPool[T]) Get(sz int) *[]T {
	for i, size := range p.sizes {
		if sz <= size {
			if b, ok := p.buckets[i].Get().(*[]T); ok {
				return b
			}
			s := make([]T, 0, size)
			return &s
		}
	}
	s := make([]T, 0, sz)
	return &s
}

//go:noinline
func (p *BucketedPool[T]) Put(b *[]T) {
	for i, size := range p.sizes {
		if cap(*b) == size {
			p.buckets[i].Put(b)
			return
		}
	}
}

var chunks = NewBucketedPool[byte](64, 65536)

// BytePool lends []byte by size class, as Prometheus' util/pool does: a method of a type
// without type parameters, so no probe reads its receiver unless asked.
type BytePool struct {
	buckets []sync.Pool
	sizes   []int
}

func NewBytePool(minSize, maxSize int) *BytePool {
	p := &BytePool{}
	for s := minSize; s <= maxSize; s *= 2 {
		p.sizes = append(p.sizes, s)
	}
	p.buckets = make([]sync.Pool, len(p.sizes))
	return p
}

//go:noinline
func (p *BytePool) Get(sz int) []byte {
	for i, size := range p.sizes {
		if sz <= size {
			if b, ok := p.buckets[i].Get().(*[]byte); ok {
				return *b
			}
			return make([]byte, 0, size)
		}
	}
	return make([]byte, 0, sz)
}

//go:noinline
func (p *BytePool) Put(b []byte) {
	for i, size := range p.sizes {
		if cap(b) == size {
			b = b[:0]
			p.buckets[i].Put(&b)
			return
		}
	}
}

var bytePool = NewBytePool(64, 65536)

// Obj is what hold takes out of holds, and never gives back.
type Obj struct{ data [16]byte }

// objPool lends a fresh object each Get and drops what Put gives back: the memory benchmark
// needs a million distinct objects out at once, not reuse.
type objPool struct{ lent int }

//go:noinline
func (p *objPool) Get() *Obj {
	p.lent++
	return new(Obj)
}

//go:noinline
func (p *objPool) Put(o *Obj) { p.lent-- }

// ShapePool is instantiated with 16 array types of distinct sizes: 16 shape functions of Get
// and Put, so the attach benchmark can ask for 1 to 16 pools of 4 probes each (Get's entry,
// its 2 RETs, and Put).
type ShapePool[T any] struct{ free []*T }

//go:noinline
func (p *ShapePool[T]) Get() *T {
	if n := len(p.free); n > 0 {
		o := p.free[n-1]
		p.free = p.free[:n-1]
		return o
	}
	return new(T)
}

//go:noinline
func (p *ShapePool[T]) Put(o *T) { p.free = append(p.free, o) }

func pair[T any](p *ShapePool[T]) { p.Put(p.Get()) }

func shapes() {
	pair(&ShapePool[[1]byte]{})
	pair(&ShapePool[[2]byte]{})
	pair(&ShapePool[[3]byte]{})
	pair(&ShapePool[[4]byte]{})
	pair(&ShapePool[[5]byte]{})
	pair(&ShapePool[[6]byte]{})
	pair(&ShapePool[[7]byte]{})
	pair(&ShapePool[[8]byte]{})
	pair(&ShapePool[[9]byte]{})
	pair(&ShapePool[[10]byte]{})
	pair(&ShapePool[[11]byte]{})
	pair(&ShapePool[[12]byte]{})
	pair(&ShapePool[[13]byte]{})
	pair(&ShapePool[[14]byte]{})
	pair(&ShapePool[[15]byte]{})
	pair(&ShapePool[[16]byte]{})
}

var (
	holds objPool
	kept  []*Obj
)

//go:noinline
func syncPair() {
	b := buffers.Get().(*[]byte)
	buffers.Put(b)
}

//go:noinline
func bucketedPair() {
	b := chunks.Get(1000)
	chunks.Put(b)
}

//go:noinline
func bytesPair() {
	b := bytePool.Get(1000)
	bytePool.Put(b)
}

// spread keeps one object from holds taken through each of 1<<depth call paths: at each
// level the walk goes through left or right, by one bit of the path's number, so that
// every path has return addresses of its own (pooltrace top's bench of 1,000 paths).
func spread(depth int) {
	for path := 0; path < 1<<depth; path++ {
		walk(path, depth)
	}
}

//go:noinline
func walk(path, depth int) {
	switch {
	case depth == 0:
		kept = append(kept, holds.Get())
	case path&1 == 0:
		left(path>>1, depth-1)
	default:
		right(path>>1, depth-1)
	}
}

//go:noinline
func left(path, depth int) { walk(path, depth) }

//go:noinline
func right(path, depth int) { walk(path, depth) }

func timed(pairs int, body func(int)) time.Duration {
	start := time.Now()
	body(pairs)
	return time.Since(start)
}

func run(mode string, pairs int) time.Duration {
	switch mode {
	case "sync":
		return timed(pairs, func(n int) {
			for i := 0; i < n; i++ {
				syncPair()
			}
		})
	case "bucketed":
		return timed(pairs, func(n int) {
			for i := 0; i < n; i++ {
				bucketedPair()
			}
		})
	case "bytes":
		return timed(pairs, func(n int) {
			for i := 0; i < n; i++ {
				bytesPair()
			}
		})
	case "parallel":
		workers := runtime.GOMAXPROCS(0)
		return timed(pairs, func(n int) {
			var wg sync.WaitGroup
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < n/workers; i++ {
						syncPair()
					}
				}()
			}
			wg.Wait()
		})
	}
	panic("unknown mode " + mode)
}

// paced makes rate pairs a second for the given seconds, in 1 ms slices.
func paced(rate, seconds int) float64 {
	start := time.Now()
	done := 0
	for time.Since(start) < time.Duration(seconds)*time.Second {
		due := int(time.Since(start).Seconds() * float64(rate))
		for ; done < due; done++ {
			syncPair()
		}
		time.Sleep(time.Millisecond)
	}
	return float64(done) / time.Since(start).Seconds()
}

func main() {
	fmt.Printf("ready %d\n", os.Getpid())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		arg := func(i int) int { n, _ := strconv.Atoi(f[i]); return n }
		switch {
		case len(f) == 3 && f[0] == "run":
			d := run(f[1], arg(2))
			fmt.Printf("ns_per_pair=%.1f pairs=%d\n", float64(d.Nanoseconds())/float64(arg(2)), arg(2))
		case len(f) == 3 && f[0] == "paced":
			fmt.Printf("rate=%.0f\n", paced(arg(1), arg(2)))
		case len(f) == 2 && f[0] == "hold":
			for i := 0; i < arg(1); i++ {
				kept = append(kept, holds.Get())
			}
			fmt.Printf("held=%d\n", len(kept))
		case len(f) == 2 && f[0] == "paths":
			spread(arg(1))
			fmt.Printf("paths=%d\n", 1<<arg(1))
		case len(f) == 1 && f[0] == "release":
			for _, o := range kept {
				holds.Put(o)
			}
			fmt.Printf("released=%d\n", len(kept))
			kept = nil
		case len(f) == 1 && f[0] == "shapes":
			shapes()
			fmt.Println("shapes=16")
		case len(f) == 1 && f[0] == "exit":
			return
		}
	}
}
