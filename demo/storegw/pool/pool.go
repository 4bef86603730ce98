// Package pool is a counting, bucketed pool of slices, shaped like Thanos' pkg/pool: Get
// refuses to hand out more than maxTotal bytes at once, so objects that are never Put back
// eventually make every Get fail with ErrPoolExhausted.
package pool

import (
	"errors"
	"sync"
	"sync/atomic"
)

// ErrPoolExhausted is returned when usedTotal would exceed maxTotal.
var ErrPoolExhausted = errors.New("pool exhausted")

// BucketedPool hands out *[]T from size classes minSize, 2*minSize, ... maxSize.
type BucketedPool[T any] struct {
	buckets   []sync.Pool
	sizes     []int
	maxTotal  uint64
	usedTotal atomic.Uint64
}

// New returns a pool of size classes from minSize to maxSize that lends at most maxTotal
// bytes (in capacity) at once.
func New[T any](minSize, maxSize int, maxTotal uint64) *BucketedPool[T] {
	p := &BucketedPool[T]{maxTotal: maxTotal}
	for s := minSize; s <= maxSize; s *= 2 {
		p.sizes = append(p.sizes, s)
	}
	p.buckets = make([]sync.Pool, len(p.sizes))
	return p
}

// Get returns a slice with len 0 and cap >= sz.
func (p *BucketedPool[T]) Get(sz int) (*[]T, error) {
	if p.maxTotal > 0 && p.usedTotal.Load()+uint64(sz) > p.maxTotal {
		return nil, ErrPoolExhausted
	}
	for i, bktSize := range p.sizes {
		if sz > bktSize {
			continue
		}
		b, ok := p.buckets[i].Get().(*[]T)
		if !ok {
			s := make([]T, 0, bktSize)
			b = &s
		}
		p.usedTotal.Add(uint64(cap(*b)))
		return b, nil
	}
	// Larger than every size class: a one-off slice, still counted.
	s := make([]T, 0, sz)
	p.usedTotal.Add(uint64(sz))
	return &s, nil
}

// Put returns a slice obtained from Get.
func (p *BucketedPool[T]) Put(b *[]T) {
	if b == nil {
		return
	}
	size := cap(*b)
	for i, bktSize := range p.sizes {
		if size == bktSize {
			*b = (*b)[:0]
			p.buckets[i].Put(b)
			break
		}
	}
	p.usedTotal.Add(^uint64(size - 1))
}

// UsedBytes is the capacity currently lent out.
func (p *BucketedPool[T]) UsedBytes() uint64 { return p.usedTotal.Load() }

// MaxBytes is the most that can be lent out at once.
func (p *BucketedPool[T]) MaxBytes() uint64 { return p.maxTotal }
