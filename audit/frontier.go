package audit

import (
	"bytes"
	"sync"

	"golang.org/x/mod/sumdb/tlog"
)

// frontier is the tree's frontier after the log's last append by this
// process: the stored hashes of the complete subtrees that the next record
// joins (for a tree of n records, the hash at level L, index (n>>L)-1, for
// every bit L set in n). Appending a record reads them (tlog.StoredHashes);
// without this, every batch read them back from the database.
//
// The frontier is keyed by the head (place and chain hash) it belongs to,
// and is used only when the head read under the append's lock is that one.
// The chain hash commits to every record before it, and the tree's hashes
// are a function of the records, so a matching head means a matching tree,
// whoever wrote it: an append rolled back after storing its frontier leaves
// a head no later append starts from (it reads the old one and falls back
// to the database), and another writer (a second process) moves the head
// away from the cached one. The hashes kept are the ones this process
// computed or read for that head; a missing one is read as before.
type frontier struct {
	mu     sync.Mutex
	seq    int64
	hash   []byte
	hashes map[int64]tlog.Hash
}

// load copies into mem the frontier hashes kept for head, if any.
func (f *frontier) load(head Head, mem map[int64]tlog.Hash) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hashes == nil || f.seq != head.Seq || !bytes.Equal(f.hash, head.Hash) {
		return
	}
	for x, h := range f.hashes {
		mem[x] = h
	}
}

// store keeps, for head, the frontier hashes of a tree of head.Seq records
// that mem holds (hashes computed or read while appending up to head).
func (f *frontier) store(head Head, mem map[int64]tlog.Hash) {
	hs := make(map[int64]tlog.Hash, 8)
	for _, x := range frontierIndexes(head.Seq) {
		if h, ok := mem[x]; ok {
			hs[x] = h
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq, f.hash, f.hashes = head.Seq, bytes.Clone(head.Hash), hs
}

// frontierIndexes returns the stored hash indexes of the frontier of a tree
// of n records: the hashes that the record with index n (0-based) reads.
func frontierIndexes(n int64) []int64 {
	var xs []int64
	for level := 0; n>>level > 0; level++ {
		if n>>level&1 == 1 {
			xs = append(xs, tlog.StoredHashIndex(level, n>>level-1))
		}
	}
	return xs
}
