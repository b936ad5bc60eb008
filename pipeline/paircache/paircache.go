package paircache

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"hash/maphash"
	"sync"

	"github.com/rerank/rerank/model/wordpiece"
)

// Key identifies one pair of one model: the first 128 bits of a SHA-256
// of the model's digest, the pair's token ids and its type ids. Two keys
// collide by chance with probability 2^-64 among 2^32 entries.
type Key [16]byte

// KeyOf is the key of enc scored by the model with this digest.
func KeyOf(digest string, enc wordpiece.Encoding) Key {
	h := sha256.New()
	var n [4]byte
	binary.LittleEndian.PutUint32(n[:], uint32(len(digest)))
	h.Write(n[:])
	h.Write([]byte(digest))
	binary.LittleEndian.PutUint32(n[:], uint32(len(enc.IDs)))
	h.Write(n[:])
	buf := make([]byte, 0, 5*len(enc.IDs))
	for i, id := range enc.IDs {
		buf = binary.LittleEndian.AppendUint32(buf, uint32(id))
		var t byte
		if i < len(enc.TypeIDs) {
			t = byte(enc.TypeIDs[i])
		}
		buf = append(buf, t)
	}
	h.Write(buf)
	var k Key
	copy(k[:], h.Sum(nil))
	return k
}

// EntryBytes is what one entry costs at most in steady state, its share of
// the index included: a 28-byte node and at most four 4-byte slots of the
// index, an open-addressing table kept at most half full (no tombstones: a
// removal shifts its cluster back, so churn never grows it). The cache
// holds at most MaxBytes/EntryBytes entries (~22 M per GiB);
// TestMemoryBound measures it. (The index has at least 1,024 slots, and
// while it or the node slice grows both copies live for a moment.)
const EntryBytes = 48

// node is one entry in the LRU list; prev and next are node indexes, -1
// for none.
type node struct {
	key        Key
	score      float32
	prev, next int32
}

// Stats are the cache's counters since it was made.
type Stats struct {
	Hits, Misses, Evictions int64
	// Shared counts pairs taken from another job's scoring in flight
	// (single flight) instead of scored again.
	Shared  int64
	Entries int
	Bytes   int64 // Entries × EntryBytes
	// MaxBytes is the bound.
	MaxBytes int64
}

// Cache maps pair keys to scores. It is safe for concurrent use.
type Cache struct {
	mu         sync.Mutex
	maxEntries int
	index      []int32 // open addressing over nodes' keys; -1 empty; len a power of 2
	seed       maphash.Seed
	nodes      []node
	head, tail int32 // most and least recently used; -1 when empty
	inflight   map[Key]*Flight
	st         Stats
}

// New returns a cache of at most maxBytes (at least one entry).
func New(maxBytes int64) *Cache {
	n := max(int(maxBytes/EntryBytes), 1)
	n = min(n, 1<<31-1)
	return &Cache{maxEntries: n, seed: maphash.MakeSeed(), head: -1, tail: -1, inflight: map[Key]*Flight{},
		st: Stats{MaxBytes: maxBytes}}
}

// home is k's first slot in a table of mask+1 slots. The process's own
// seed mixes the key, so that no job can choose pairs whose keys crowd one
// cluster of the table (a key is a digest of the pair, which a job picks).
func (c *Cache) home(k Key, mask int) int { return int(maphash.Comparable(c.seed, k) & uint64(mask)) }

// find returns the slot of k, or the empty slot where it would go.
func (c *Cache) find(k Key) (slot int, found bool) {
	if len(c.index) == 0 {
		return -1, false
	}
	mask := len(c.index) - 1
	for slot = c.home(k, mask); ; slot = (slot + 1) & mask {
		i := c.index[slot]
		if i < 0 {
			return slot, false
		}
		if c.nodes[i].key == k {
			return slot, true
		}
	}
}

// grow doubles the index (at least 1,024 slots) and places every node again.
func (c *Cache) grow() {
	c.index = make([]int32, max(2*len(c.index), 1024))
	for s := range c.index {
		c.index[s] = -1
	}
	mask := len(c.index) - 1
	for i := range c.nodes {
		s := c.home(c.nodes[i].key, mask)
		for c.index[s] >= 0 {
			s = (s + 1) & mask
		}
		c.index[s] = int32(i)
	}
}

// remove empties slot, shifting back the entries after it in its cluster
// that would otherwise no longer be found.
func (c *Cache) remove(slot int) {
	mask := len(c.index) - 1
	for j := slot; ; {
		j = (j + 1) & mask
		i := c.index[j]
		if i < 0 {
			break
		}
		h := c.home(c.nodes[i].key, mask)
		// The entry at j moves into the hole unless its home lies
		// cyclically in (slot, j] (then it is still reachable).
		if slot <= j && (h <= slot || h > j) || slot > j && h <= slot && h > j {
			c.index[slot] = i
			slot = j
		}
	}
	c.index[slot] = -1
}

// Get returns the score of k, if the cache holds it, and counts a hit or
// a miss.
func (c *Cache) Get(k Key) (float32, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	slot, ok := c.find(k)
	if !ok {
		c.st.Misses++
		return 0, false
	}
	i := c.index[slot]
	c.st.Hits++
	c.touch(i)
	return c.nodes[i].score, true
}

// Put stores the score of k, evicting the least recently used entry when
// full.
func (c *Cache) Put(k Key, score float32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.put(k, score)
}

func (c *Cache) put(k Key, score float32) {
	if slot, ok := c.find(k); ok {
		i := c.index[slot]
		c.nodes[i].score = score
		c.touch(i)
		return
	}
	var i int32
	if len(c.nodes) < c.maxEntries {
		if len(c.nodes) == cap(c.nodes) {
			// Grown by hand: append's doubling would overshoot the bound.
			grown := make([]node, len(c.nodes), min(max(2*cap(c.nodes), 1024), c.maxEntries))
			copy(grown, c.nodes)
			c.nodes = grown
		}
		c.nodes = append(c.nodes, node{})
		i = int32(len(c.nodes) - 1)
	} else {
		i = c.tail
		c.unlink(i)
		old, _ := c.find(c.nodes[i].key)
		c.remove(old)
		c.st.Evictions++
	}
	c.nodes[i] = node{key: k, score: score, prev: -1, next: -1}
	if 2*len(c.nodes) > len(c.index) {
		c.grow() // places node i too
	} else {
		slot, _ := c.find(k)
		c.index[slot] = i
	}
	c.pushFront(i)
}

// touch makes node i the most recently used.
func (c *Cache) touch(i int32) {
	if c.head == i {
		return
	}
	c.unlink(i)
	c.pushFront(i)
}

func (c *Cache) unlink(i int32) {
	n := &c.nodes[i]
	if n.prev >= 0 {
		c.nodes[n.prev].next = n.next
	} else {
		c.head = n.next
	}
	if n.next >= 0 {
		c.nodes[n.next].prev = n.prev
	} else {
		c.tail = n.prev
	}
	n.prev, n.next = -1, -1
}

func (c *Cache) pushFront(i int32) {
	n := &c.nodes[i]
	n.prev, n.next = -1, c.head
	if c.head >= 0 {
		c.nodes[c.head].prev = i
	}
	c.head = i
	if c.tail < 0 {
		c.tail = i
	}
}

// Stats reads the counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.st
	st.Entries = len(c.nodes)
	st.Bytes = int64(st.Entries) * EntryBytes
	return st
}

// Flight is a pair being scored: its owner ends it with Done or Abandon
// (the first end counts; later ones do nothing); others Wait for it.
type Flight struct {
	c     *Cache
	key   Key
	owner Owner
	done  chan struct{}
	ended bool // guarded by c.mu
	score float32
	ok    bool
}

// Owner describes who scores a flight, for those deciding whether to wait
// for it: its rank (lower is served first: the lane) and how many pairs
// its job scores.
type Owner struct {
	Rank, Pairs int
}

// Owner is who looked the flight up first and scores it.
func (f *Flight) Owner() Owner { return f.owner }

// Lookup is Get, then, on a miss, Claim: the score when cached, else the
// pair's flight and whether the caller owns it (and must end it with Done
// or Abandon) or shares another's (and may Wait for it, or score the pair
// itself when the flight's Owner would make it wait too long). who
// describes the caller, the flight's owner if it claims it.
func (c *Cache) Lookup(k Key, who Owner) (score float32, hit bool, f *Flight, owner bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if slot, ok := c.find(k); ok {
		i := c.index[slot]
		c.st.Hits++
		c.touch(i)
		return c.nodes[i].score, true, nil, false
	}
	c.st.Misses++
	if f := c.inflight[k]; f != nil {
		return 0, false, f, false
	}
	f = &Flight{c: c, key: k, owner: who, done: make(chan struct{})}
	c.inflight[k] = f
	return 0, false, f, true
}

// CountShared counts n pairs taken from other jobs' flights instead of
// scored again (Stats.Shared).
func (c *Cache) CountShared(n int) {
	c.mu.Lock()
	c.st.Shared += int64(n)
	c.mu.Unlock()
}

// Done stores the flight's score and hands it to its waiters.
func (f *Flight) Done(score float32) { f.end(score, true) }

// Abandon ends a flight without a score (its scoring failed): its waiters
// score the pair themselves.
func (f *Flight) Abandon() { f.end(0, false) }

func (f *Flight) end(score float32, ok bool) {
	c := f.c
	c.mu.Lock()
	if f.ended {
		c.mu.Unlock()
		return
	}
	f.ended = true
	if ok {
		c.put(f.key, score)
	}
	if c.inflight[f.key] == f {
		delete(c.inflight, f.key)
	}
	f.score, f.ok = score, ok
	c.mu.Unlock()
	close(f.done)
}

// Wait waits for the flight's end: its score, or ok false when it was
// abandoned; ctx's error when ctx ends first.
func (f *Flight) Wait(ctx context.Context) (score float32, ok bool, err error) {
	select {
	case <-f.done:
		return f.score, f.ok, nil
	case <-ctx.Done():
		return 0, false, ctx.Err()
	}
}
