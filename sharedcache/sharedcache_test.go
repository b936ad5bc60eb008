package sharedcache_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rerank/rerank/internal/natsembed"
	"github.com/rerank/rerank/model/wordpiece"
	"github.com/rerank/rerank/pipeline/paircache"
	"github.com/rerank/rerank/sharedcache"
)

// server starts a JetStream server and connects to it.
func server(t *testing.T) (*natsembed.Server, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	ns, err := natsembed.Start(natsembed.Options{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Stop)
	nc, err := nats.Connect(ns.ClientURL(), nats.ReconnectBufSize(-1), nats.MaxReconnects(-1), nats.ReconnectWait(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return ns, nc, js
}

func keys(n int, salt string) []paircache.Key {
	ks := make([]paircache.Key, n)
	for i := range ks {
		ks[i] = paircache.KeyOf(salt, wordpiece.Encoding{IDs: []int64{101, int64(i), 102}, TypeIDs: []int64{0, 0, 0}})
	}
	return ks
}

// eventually polls cond for up to 10 s (stores are not acknowledged, so a
// store becomes visible a moment after Put).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    sharedcache.Config
		ok   bool
	}{
		{"defaults", sharedcache.Config{}, true},
		{"named", sharedcache.Config{Bucket: "scores_v2-a", TTL: time.Hour, MaxBytes: 64 << 20, Replicas: 3}, true},
		{"bucket with a dot", sharedcache.Config{Bucket: "a.b"}, false},
		{"bucket with a wildcard", sharedcache.Config{Bucket: "a*"}, false},
		{"ttl too short", sharedcache.Config{TTL: time.Second}, false},
		{"tiny bucket", sharedcache.Config{MaxBytes: 1000}, false},
		{"replicas", sharedcache.Config{Replicas: 7}, false},
		{"negative timeout", sharedcache.Config{Timeout: -1}, false},
	} {
		err := tc.c.Validate()
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, sharedcache.ErrConfig)) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	// Every problem at once.
	err := sharedcache.Config{Bucket: "a.b", TTL: time.Second}.Validate()
	if err == nil || len(err.(interface{ Unwrap() []error }).Unwrap()) != 2 {
		t.Errorf("two problems reported as %v", err)
	}
}

// Stored scores are found by any tier on the bucket (another worker's),
// bit for bit; keys never stored are misses; a value that is not a score
// is a miss too. The bucket is an ordinary key-value bucket.
func TestStoredScoresAreFoundByAnotherWorker(t *testing.T) {
	_, nc, js := server(t)
	c := sharedcache.Config{Bucket: "scores"}
	if err := sharedcache.Provision(context.Background(), js, c); err != nil {
		t.Fatal(err)
	}
	a, err := sharedcache.New(nc, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	nc2, err := nats.Connect(nc.ConnectedUrl())
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	b, err := sharedcache.New(nc2, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	ks := keys(200, "d")
	scores := make([]float32, len(ks))
	for i := range scores {
		scores[i] = float32(i)*0.37 - 20
	}
	a.Put(ks[:150], scores[:150])
	ctx := context.Background()
	eventually(t, "the stores", func() bool { _, f := b.Get(ctx, ks[149:150]); return f[0] })
	before := b.Stats()
	got, found := b.Get(ctx, ks)
	for i := range ks {
		if found[i] != (i < 150) || (found[i] && got[i] != scores[i]) {
			t.Fatalf("key %d: found %v %v, want %v %v", i, found[i], got[i], i < 150, scores[i])
		}
	}
	kv, err := js.KeyValue(ctx, "scores")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, fmt.Sprintf("%x", ks[160]), []byte("bad")); err != nil {
		t.Fatal(err)
	}
	if _, found := b.Get(ctx, ks[160:161]); found[0] {
		t.Fatal("a malformed value was taken for a score")
	}
	if st := b.Stats(); st.Hits-before.Hits != 150 || st.Errors != 1 || st.Lookups-before.Lookups != 200+1 {
		t.Errorf("stats %+v", st)
	}
	if st := a.Stats(); st.Puts != 150 {
		t.Errorf("puts %+v", st)
	}
}

// A full bucket keeps learning: the oldest entries make room for new ones
// (a default nats.go bucket would refuse them), and it stays within its
// bound.
func TestFullBucketDropsOldestEntries(t *testing.T) {
	_, nc, js := server(t)
	c := sharedcache.Config{Bucket: "small", MaxBytes: 1 << 20}
	if err := sharedcache.Provision(context.Background(), js, c); err != nil {
		t.Fatal(err)
	}
	tier, err := sharedcache.New(nc, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	ks := keys(30000, "full") // ~100 bytes each: 3 MB, three times the bound
	scores := make([]float32, len(ks))
	for i := 0; i < len(ks); i += 1000 {
		tier.Put(ks[i:i+1000], scores[i:i+1000])
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	eventually(t, "the last store", func() bool { _, f := tier.Get(ctx, ks[len(ks)-1:]); return f[0] })
	if _, f := tier.Get(ctx, ks[:1]); f[0] {
		t.Error("the first entry is still there in a bucket three times over its bound")
	}
	s, err := js.Stream(ctx, sharedcache.StreamName("small"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Bytes > 1<<20 || info.State.Msgs < 5000 {
		t.Errorf("bucket holds %d entries in %d bytes, bound %d", info.State.Msgs, info.State.Bytes, 1<<20)
	}
}

// Without its bucket, and with its server gone, the tier answers misses at
// once and stores nothing; after its backoff it binds a bucket created
// meanwhile, and after an outage it finds the server back.
func TestFailuresAreMisses(t *testing.T) {
	ns, nc, js := server(t)
	c := sharedcache.Config{Bucket: "later", Backoff: 20 * time.Millisecond, Timeout: 100 * time.Millisecond}
	tier, err := sharedcache.New(nc, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ks := keys(10, "f")
	if _, found := tier.Get(ctx, ks); found[0] {
		t.Fatal("found a score in a bucket that does not exist")
	}
	if st := tier.Stats(); st.Errors != 1 {
		t.Fatalf("no bucket: %+v", st)
	}
	if _, found := tier.Get(ctx, ks); found[0] { // during the backoff: looked up nowhere
		t.Fatal("found a score in the backoff")
	}
	if err := sharedcache.Provision(ctx, js, c); err != nil {
		t.Fatal(err)
	}
	scores := make([]float32, len(ks))
	eventually(t, "the bucket bound after the backoff", func() bool {
		tier.Put(ks, scores)
		_, f := tier.Get(ctx, ks)
		return f[9]
	})

	// The server goes: misses, nothing stored, no error to the caller.
	storeDir := filepath.Dir(ns.StoreDir()) // StoreDir names its jetstream folder
	port := ns.Addr().(*net.TCPAddr).Port
	ns.Shutdown()
	ns.WaitForShutdown()
	other := keys(10, "other")
	tier.Put(other, scores)
	if _, found := tier.Get(ctx, ks); found[0] {
		t.Fatal("found a score with the server down")
	}
	if st := tier.Stats(); st.Skipped == 0 {
		t.Errorf("server down: %+v", st)
	}

	// It comes back (same port, same store): the scores stored before are
	// found again once the backoff has passed.
	back, err := natsembed.Start(natsembed.Options{Port: port, StoreDir: storeDir})
	if err != nil {
		t.Fatal(err)
	}
	defer back.Stop()
	eventually(t, "the tier answering after the outage", func() bool {
		_, f := tier.Get(ctx, ks)
		return f[9]
	})
}

// Ensure creates a missing bucket and leaves an existing one's bounds as
// they are; Provision updates them.
func TestEnsureKeepsAnExistingBucket(t *testing.T) {
	_, _, js := server(t)
	ctx := context.Background()
	bounds := func() (time.Duration, int64) {
		s, err := js.Stream(ctx, sharedcache.StreamName("b"))
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().Config.MaxAge, s.CachedInfo().Config.MaxBytes
	}
	if created, err := sharedcache.Ensure(ctx, js, sharedcache.Config{Bucket: "b", TTL: time.Hour, MaxBytes: 8 << 20}); err != nil || !created {
		t.Fatalf("Ensure on no bucket: %v %v", created, err)
	}
	if created, err := sharedcache.Ensure(ctx, js, sharedcache.Config{Bucket: "b"}); err != nil || created {
		t.Fatalf("Ensure on an existing bucket: %v %v", created, err)
	}
	if ttl, max := bounds(); ttl != time.Hour || max != 8<<20 {
		t.Fatalf("Ensure changed the bounds to %v, %d", ttl, max)
	}
	if err := sharedcache.Provision(ctx, js, sharedcache.Config{Bucket: "b", TTL: 2 * time.Hour, MaxBytes: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	if ttl, max := bounds(); ttl != 2*time.Hour || max != 16<<20 {
		t.Fatalf("Provision left the bounds at %v, %d", ttl, max)
	}
}
