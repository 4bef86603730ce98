// Package store serves series from blocks, copying each chunk into bytes from a shared,
// counting chunk pool, like Thanos' store-gateway. Chunk bytes go back to the pool when the
// request's merge of block clients is closed.
package store

import (
	"errors"
	"fmt"
	"math/rand"
	"time"

	"storegw/pool"
)

// ErrChunkLimit is returned when a request would load more chunks than it allows.
var ErrChunkLimit = errors.New("chunk limit exceeded")

// Request selects chunks from a number of blocks.
type Request struct {
	Blocks         int
	ChunksPerBlock int
	// MaxChunks bounds the chunks one request may load (0: no bound).
	MaxChunks int
}

// Response summarizes what a request read.
type Response struct {
	Chunks int
	Bytes  int
}

// BucketStore reads chunks from its blocks through a chunk pool.
type BucketStore struct {
	chunkPool *pool.BucketedPool[byte]
	blocks    []*block
}

type block struct {
	chunks [][]byte
}

// NewBucketStore makes a store with nBlocks blocks of random chunks of 1..16 KiB.
func NewBucketStore(chunkPool *pool.BucketedPool[byte], nBlocks int) *BucketStore {
	rng := rand.New(rand.NewSource(1))
	s := &BucketStore{chunkPool: chunkPool}
	for i := 0; i < nBlocks; i++ {
		b := &block{}
		for j := 0; j < 64; j++ {
			b.chunks = append(b.chunks, make([]byte, 1024+rng.Intn(15*1024)))
		}
		s.blocks = append(s.blocks, b)
	}
	return s
}

// Series loads the chunks of every selected block, holds them while the response is sent
// (SendDelay), and closes the merge when done, on every path, with defer.
//
//go:noinline
func (s *BucketStore) Series(req Request) (Response, error) {
	merge := s.newMerge(req)
	defer merge.Close()
	var resp Response
	for _, client := range merge.clients {
		if err := client.loadChunks(req, &resp); err != nil {
			return Response{}, err
		}
	}
	time.Sleep(SendDelay)
	return resp, nil
}

// SendDelay is how long Series holds its chunks while sending: a busy, healthy path always
// has some objects out.
var SendDelay = 50 * time.Millisecond

// SeriesStream is the streaming variant. A refactor dropped its `defer merge.Close()` in
// favour of a Close at the end of the success path: when a block fails (a chunk limit is
// hit), the chunk bytes already loaded never go back to the pool.
//
//go:noinline
func (s *BucketStore) SeriesStream(req Request) (Response, error) {
	merge := s.newMerge(req)
	var resp Response
	for _, client := range merge.clients {
		if err := client.loadChunks(req, &resp); err != nil {
			return Response{}, fmt.Errorf("stream: %w", err)
		}
	}
	merge.Close()
	return resp, nil
}

func (s *BucketStore) newMerge(req Request) *mergedSeries {
	m := &mergedSeries{}
	for i := 0; i < req.Blocks && i < len(s.blocks); i++ {
		m.clients = append(m.clients, &blockSeriesClient{
			block:  s.blocks[i],
			chunkr: &bucketChunkReader{pool: s.chunkPool},
		})
	}
	return m
}

// mergedSeries merges the series of several blocks; closing it closes every block client.
type mergedSeries struct {
	clients []*blockSeriesClient
}

//go:noinline
func (m *mergedSeries) Close() {
	for _, c := range m.clients {
		c.Close()
	}
}

// blockSeriesClient reads one block for one request.
type blockSeriesClient struct {
	block  *block
	chunkr *bucketChunkReader
}

//go:noinline
func (c *blockSeriesClient) loadChunks(req Request, resp *Response) error {
	for i := 0; i < req.ChunksPerBlock && i < len(c.block.chunks); i++ {
		if req.MaxChunks > 0 && resp.Chunks >= req.MaxChunks {
			return ErrChunkLimit
		}
		data, err := c.chunkr.save(c.block.chunks[i])
		if err != nil {
			return err
		}
		resp.Chunks++
		resp.Bytes += len(data)
	}
	return nil
}

//go:noinline
func (c *blockSeriesClient) Close() {
	c.chunkr.Close()
}

// bucketChunkReader copies chunks into pooled bytes, which it owns until Close.
type bucketChunkReader struct {
	pool       *pool.BucketedPool[byte]
	chunkBytes []*[]byte
}

//go:noinline
func (r *bucketChunkReader) save(chunk []byte) ([]byte, error) {
	b, err := r.pool.Get(len(chunk))
	if err != nil {
		return nil, err
	}
	*b = append(*b, chunk...)
	r.chunkBytes = append(r.chunkBytes, b)
	return *b, nil
}

//go:noinline
func (r *bucketChunkReader) Close() {
	for _, b := range r.chunkBytes {
		r.pool.Put(b)
	}
	r.chunkBytes = nil
}
