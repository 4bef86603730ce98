// storegw is pooltrace's demo: a small store-gateway that leaks pooled chunk bytes on one
// error path, and a load generator for it.
//
//	storegw serve [-addr 127.0.0.1:0] [-pool-max-mib 80]
//	storegw load -addr HOST:PORT [-duration 30s] [-rate 200]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"storegw/pool"
	"storegw/store"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: storegw serve|load [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "load":
		err = load(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "storegw:", err)
		os.Exit(1)
	}
}

func serve(args []string) error {
	flags := flag.NewFlagSet("serve", flag.ExitOnError)
	addr := flags.String("addr", "127.0.0.1:0", "listen address (loopback)")
	maxMiB := flags.Uint64("pool-max-mib", 80, "chunk pool limit (maxTotal), MiB")
	flags.Parse(args)

	chunkPool := pool.New[byte](1024, 64*1024, *maxMiB<<20)
	bucketStore := store.NewBucketStore(chunkPool, 8)
	var refused atomic.Int64

	mux := http.NewServeMux()
	mux.HandleFunc("/series", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		req := store.Request{
			Blocks:         intParam(q.Get("blocks"), 4),
			ChunksPerBlock: intParam(q.Get("chunks"), 16),
			MaxChunks:      intParam(q.Get("limit"), 0),
		}
		var resp store.Response
		var err error
		if q.Get("stream") == "1" {
			resp, err = bucketStore.SeriesStream(req)
		} else {
			resp, err = bucketStore.Series(req)
		}
		switch {
		case errors.Is(err, pool.ErrPoolExhausted):
			refused.Add(1)
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		case err != nil:
			http.Error(w, err.Error(), http.StatusUnprocessableEntity)
		default:
			fmt.Fprintf(w, "%d chunks, %d bytes\n", resp.Chunks, resp.Bytes)
		}
	})

	listener, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	fmt.Printf("storegw: listening on %s (pid %d)\n", listener.Addr(), os.Getpid())
	go func() {
		for range time.Tick(5 * time.Second) {
			fmt.Printf("storegw: chunk pool %.1f of %d MiB in use, %d queries refused (pool exhausted)\n",
				float64(chunkPool.UsedBytes())/(1<<20), chunkPool.MaxBytes()>>20, refused.Load())
		}
	}()
	return http.Serve(listener, mux)
}

func load(args []string) error {
	flags := flag.NewFlagSet("load", flag.ExitOnError)
	addr := flags.String("addr", "", "storegw address, e.g. 127.0.0.1:9090")
	duration := flags.Duration("duration", 30*time.Second, "how long to send load")
	rate := flags.Int("rate", 200, "requests per second")
	flags.Parse(args)
	if *addr == "" {
		return errors.New("load: -addr is required")
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil || !net.ParseIP(host).IsLoopback() {
		return fmt.Errorf("load: %q is not a loopback address", *addr)
	}

	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	client := &http.Client{Timeout: 5 * time.Second}
	var sent, failed atomic.Int64
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(*rate))
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			wg.Wait()
			fmt.Printf("load: %d requests, %d failed\n", sent.Load(), failed.Load())
			return nil
		case <-tick.C:
		}
		wg.Add(1)
		go func(n int) {
			defer wg.Done()
			sent.Add(1)
			if !get(client, "http://"+*addr+query(n)) {
				failed.Add(1)
			}
		}(n)
	}
}

// query mixes the request kinds: most are plain Series; one in eight streams; one in three
// streams carries a chunk limit that its blocks exceed, taking the leaking error path.
func query(n int) string {
	switch {
	case n%24 == 7:
		return "/series?stream=1&blocks=4&chunks=16&limit=40"
	case n%8 == 3:
		return "/series?stream=1&blocks=4&chunks=16"
	default:
		return "/series?blocks=4&chunks=16"
	}
}

func get(client *http.Client, url string) bool {
	resp, err := client.Get(url)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusOK
}

func intParam(s string, def int) int {
	if v, err := strconv.Atoi(s); err == nil && v >= 0 {
		return v
	}
	return def
}
