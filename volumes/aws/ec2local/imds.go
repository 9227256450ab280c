package ec2local

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strconv"
	"time"
)

// IMDSHandler returns the instance metadata service as seen from one
// instance: IMDSv2 only (a GET without a valid session token is refused with
// 401, as on an instance that requires IMDSv2).
func (s *Server) IMDSHandler(instanceID string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.serveIMDS(w, r, instanceID)
	})
}

func (s *Server) serveIMDS(w http.ResponseWriter, r *http.Request, instanceID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls["IMDS "+r.URL.Path]++
	now := s.opts.Now()
	if r.URL.Path == "/latest/api/token" {
		if r.Method != http.MethodPut {
			http.Error(w, "token requests must be PUT", http.StatusMethodNotAllowed)
			return
		}
		ttl, err := strconv.Atoi(r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds"))
		if err != nil || ttl < 1 || ttl > 21600 {
			http.Error(w, "X-aws-ec2-metadata-token-ttl-seconds must be 1 to 21600", http.StatusBadRequest)
			return
		}
		b := make([]byte, 16)
		rand.Read(b)
		tok := hex.EncodeToString(b)
		s.tokens[tok] = now.Add(time.Duration(ttl) * time.Second)
		w.Header().Set("X-aws-ec2-metadata-token-ttl-seconds", strconv.Itoa(ttl))
		w.Write([]byte(tok))
		return
	}
	if r.Method != http.MethodGet {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	exp, ok := s.tokens[r.Header.Get("X-aws-ec2-metadata-token")]
	if !ok || now.After(exp) {
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	in, ok := s.instances[instanceID]
	if !ok {
		http.NotFound(w, r)
		return
	}
	var body string
	switch r.URL.Path {
	case "/latest/meta-data/instance-id":
		body = in.id
	case "/latest/meta-data/placement/availability-zone":
		body = in.az
	case "/latest/meta-data/placement/region":
		body = s.opts.Region
	default:
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Write([]byte(body))
}
