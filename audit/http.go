package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

// Handler serves the log's public transparency data (no authentication:
// checkpoints and proofs reveal hashes, not records):
//
//	GET /v1/audit/checkpoint                 latest signed checkpoint (text/plain)
//	GET /v1/audit/consistency?old=N&new=M    consistency proof, one base64 hash per line
//	GET /v1/audit/inclusion?seq=S&size=N     inclusion proof of record S (JSON)
//
// Inclusion proofs carry the record's encoding and so its contents; mount
// that route only where callers may read the audit trail.
func Handler(l *Log) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/audit/checkpoint", func(w http.ResponseWriter, r *http.Request) {
		msg, err := l.LatestCheckpoint(r.Context())
		if err != nil {
			http.Error(w, "reading the checkpoint failed", http.StatusInternalServerError)
			return
		}
		if msg == nil {
			http.Error(w, "no checkpoint yet", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(msg)
	})
	mux.HandleFunc("GET /v1/audit/consistency", func(w http.ResponseWriter, r *http.Request) {
		oldN, err1 := strconv.ParseInt(r.URL.Query().Get("old"), 10, 64)
		newN, err2 := strconv.ParseInt(r.URL.Query().Get("new"), 10, 64)
		if err1 != nil || err2 != nil {
			http.Error(w, "old and new must be tree sizes", http.StatusBadRequest)
			return
		}
		proof, err := l.ProveConsistency(r.Context(), oldN, newN)
		if err != nil {
			proofError(w, err)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, FormatProof(proof))
	})
	mux.HandleFunc("GET /v1/audit/inclusion", func(w http.ResponseWriter, r *http.Request) {
		seq, err1 := strconv.ParseInt(r.URL.Query().Get("seq"), 10, 64)
		size, err2 := strconv.ParseInt(r.URL.Query().Get("size"), 10, 64)
		if err1 != nil || err2 != nil {
			http.Error(w, "seq and size must be integers", http.StatusBadRequest)
			return
		}
		p, err := l.ProveInclusion(r.Context(), seq, size)
		if err != nil {
			proofError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(p)
	})
	return mux
}

// proofError answers a failed proof: 400 for sizes or sequence numbers the
// log cannot prove, 500 otherwise.
func proofError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	if errors.Is(err, ErrInvalid) {
		status = http.StatusBadRequest
	}
	http.Error(w, err.Error(), status)
}
