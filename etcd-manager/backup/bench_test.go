package backup_test

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kopsnode/agents/etcd-manager/backup"
)

// load writes n keys of size bytes in transactions of 100 puts. A third
// of each value is random hex, the rest repeated text: it compresses
// about as well as Kubernetes objects do.
func load(tb testing.TB, c *clientv3.Client, n, size int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r := rand.New(rand.NewPCG(1, 2))
	text := strings.Repeat(`{"kind":"Pod","apiVersion":"v1","metadata":{"namespace":"default"}}`, size/60+1)
	for i := 0; i < n; i += 100 {
		var ops []clientv3.Op
		for j := i; j < min(n, i+100); j++ {
			random := make([]byte, size/6)
			for k := range random {
				random[k] = byte(r.IntN(256))
			}
			val := hex.EncodeToString(random) + text[:size-2*len(random)]
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("/registry/pods/default/p%07d", j), val))
		}
		if _, err := c.Txn(ctx).Then(ops...).Commit(); err != nil {
			tb.Fatal(err)
		}
	}
}

// baseline is what an operator does by hand: `etcdctl snapshot save`
// (stream to a part file, fsync, rename) and then `gzip` (default level)
// of the file.
func baseline(tb testing.TB, c *clientv3.Client, dir string) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	part := filepath.Join(dir, "snap.db.part")
	f, err := os.Create(part)
	if err != nil {
		tb.Fatal(err)
	}
	rc, err := c.Snapshot(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := io.Copy(f, rc); err != nil {
		tb.Fatal(err)
	}
	rc.Close()
	if err := f.Sync(); err != nil {
		tb.Fatal(err)
	}
	f.Close()
	if err := os.Rename(part, filepath.Join(dir, "snap.db")); err != nil {
		tb.Fatal(err)
	}
	in, err := os.Open(filepath.Join(dir, "snap.db"))
	if err != nil {
		tb.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(filepath.Join(dir, "snap.db.gz"))
	if err != nil {
		tb.Fatal(err)
	}
	defer out.Close()
	zw := gzip.NewWriter(out)
	if _, err := io.Copy(zw, in); err != nil {
		tb.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := out.Sync(); err != nil {
		tb.Fatal(err)
	}
	fi, _ := out.Stat()
	return fi.Size()
}

// BenchmarkFullBackup takes a full backup of a cluster holding
// KOPSNODE_BENCH_BACKUP_KEYS keys (default 100,000 of 1.5 KB: about 200 MB of database)
// into a file store, beside the baseline in the same run, and reports
// both times, their ratio (target: 1.3 or less), the sizes and the heap
// peak of Take.
//
//	go test ./etcd-manager/backup -run '^$' -bench FullBackup -benchtime 1x
func BenchmarkFullBackup(b *testing.B) {
	keys := 100000
	if v := os.Getenv("KOPSNODE_BENCH_BACKUP_KEYS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			b.Fatalf("KOPSNODE_BENCH_BACKUP_KEYS=%q: %v", v, err)
		}
		keys = n
	}
	c := startEtcd(b, "3.6.16", "127.44.66.1")
	load(b, c, keys, 1500)
	st := fileStore(b)
	var takeTotal, baseTotal time.Duration
	var dbSize, stored, baseStored int64
	var peak uint64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dir := b.TempDir()
		start := time.Now()
		baseStored = baseline(b, c, dir)
		baseTotal += time.Since(start)
		os.RemoveAll(dir)

		stop := heapPeak()
		start = time.Now()
		m, err := backup.Take(context.Background(), c, st, layout, backup.Options{Reason: "benchmark", SpoolDir: b.TempDir()})
		takeTotal += time.Since(start)
		peak = max(peak, stop())
		if err != nil {
			b.Fatal(err)
		}
		dbSize, stored = m.DBSize, m.StoredSize
		time.Sleep(2 * time.Millisecond) // distinct names
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(takeTotal.Seconds()/n, "take-s")
	b.ReportMetric(baseTotal.Seconds()/n, "baseline-s")
	b.ReportMetric(takeTotal.Seconds()/baseTotal.Seconds(), "ratio")
	b.ReportMetric(float64(dbSize)/(1<<20), "db-MiB")
	b.ReportMetric(float64(stored)/(1<<20), "stored-MiB")
	b.ReportMetric(float64(baseStored)/(1<<20), "baseline-gz-MiB")
	b.ReportMetric(float64(peak)/(1<<20), "heap-peak-MiB")
}

// heapPeak samples the heap until stop is called and returns the peak
// growth over the heap at the start.
func heapPeak() (stop func() uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > base && ms.HeapAlloc-base > peak.Load() {
				peak.Store(ms.HeapAlloc - base)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 {
		close(done)
		wg.Wait()
		return peak.Load()
	}
}
