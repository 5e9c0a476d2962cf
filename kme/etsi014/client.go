package etsi014

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/kme/internal/plainjson"
)

// maxResponse bounds a response body: 128 keys of 1 MiB would not fit, but
// no KME offers that; 16 MiB is far above any sane container.
const maxResponse = 16 << 20

// Client calls one KME. It is safe for concurrent use.
type Client struct {
	c *httpx.Client
}

// KeyMaterial is a delivered key: its ID and its bytes.
type KeyMaterial struct {
	ID  string
	Key []byte
}

// New returns a client for the KME at baseURL ("https://kme.example:8443";
// a trailing "/api/v1/keys" is accepted and ignored) that authenticates with
// tlsConfig (which must carry the SAE's client certificate and trust the
// KME's CA). The HTTP client keeps connections alive and times out a call
// after 30 seconds unless ctx ends sooner.
func New(baseURL string, tlsConfig *tls.Config) *Client {
	if tlsConfig != nil {
		// The HTTP/2 set-up edits NextProtos: never touch the caller's config.
		tlsConfig = tlsConfig.Clone()
	}
	tr := &http.Transport{
		TLSClientConfig:     tlsConfig,
		ForceAttemptHTTP2:   true,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	return NewWithHTTPClient(baseURL, &http.Client{Transport: tr, Timeout: 30 * time.Second})
}

// NewWithHTTPClient is New with a caller-supplied HTTP client.
func NewWithHTTPClient(baseURL string, hc *http.Client) *Client {
	b := strings.TrimRight(baseURL, "/")
	b = strings.TrimSuffix(b, strings.TrimRight(APIPrefix, "/"))
	hx := httpx.NewClient(b, hc)
	hx.Name, hx.MaxResponse, hx.DecodeError = "etsi014", maxResponse, decodeError
	return &Client{c: hx}
}

// CloseIdleConnections closes the client's idle connections.
func (c *Client) CloseIdleConnections() { c.c.CloseIdleConnections() }

// url returns the path of an API call (the httpx client adds the base).
func (c *Client) url(sae, call string) string {
	return APIPrefix + url.PathEscape(sae) + "/" + call
}

// Status returns the status of the key supply from the calling (master) SAE
// to slaveSAE.
func (c *Client) Status(ctx context.Context, slaveSAE string) (*Status, error) {
	var st Status
	if err := c.do(ctx, http.MethodGet, c.url(slaveSAE, "status"), nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// EncKeys asks for number new keys of sizeBits bits shared with slaveSAE
// (Get key). number 0 and sizeBits 0 mean the KME's defaults; when both are
// 0 the simple GET form is used, otherwise a POST with a Key request.
func (c *Client) EncKeys(ctx context.Context, slaveSAE string, number, sizeBits int) ([]KeyMaterial, error) {
	if number < 0 || sizeBits < 0 {
		return nil, fmt.Errorf("etsi014: negative number (%d) or size (%d)", number, sizeBits)
	}
	u := c.url(slaveSAE, "enc_keys")
	if number == 0 && sizeBits == 0 {
		return c.keys(ctx, http.MethodGet, u, nil, nil)
	}
	var req KeyRequest
	if number > 0 {
		req.Number = &number
	}
	if sizeBits > 0 {
		req.Size = &sizeBits
	}
	return c.keys(ctx, http.MethodPost, u, &req, nil)
}

// EncKeysRequest sends a full Key request (POST enc_keys).
func (c *Client) EncKeysRequest(ctx context.Context, slaveSAE string, req *KeyRequest) ([]KeyMaterial, error) {
	return c.keys(ctx, http.MethodPost, c.url(slaveSAE, "enc_keys"), req, nil)
}

// DecKeys fetches the keys keyIDs that masterSAE obtained for the calling
// (slave) SAE (Get key with key IDs). One ID uses the GET form, several a
// POST with a Key IDs object. Keys come back in the order of keyIDs.
func (c *Client) DecKeys(ctx context.Context, masterSAE string, keyIDs ...string) ([]KeyMaterial, error) {
	if len(keyIDs) == 0 {
		return nil, errors.New("etsi014: DecKeys needs at least one key ID")
	}
	u := c.url(masterSAE, "dec_keys")
	if len(keyIDs) == 1 {
		return c.keys(ctx, http.MethodGet, u+"?key_ID="+url.QueryEscape(keyIDs[0]), nil, keyIDs)
	}
	req := KeyIDs{KeyIDs: make([]KeyID, len(keyIDs))}
	for i, id := range keyIDs {
		req.KeyIDs[i].KeyID = id
	}
	return c.keys(ctx, http.MethodPost, u, &req, keyIDs)
}

// keys makes a call answered by a Key container and decodes its keys
// (checked against want when set).
func (c *Client) keys(ctx context.Context, method, u string, in any, want []string) ([]KeyMaterial, error) {
	body, err := c.send(ctx, method, u, in)
	if err != nil {
		return nil, err
	}
	if kc, ok := parseContainerFast(body); ok {
		return decodeContainer(kc, want)
	}
	var kc KeyContainer
	if err := json.Unmarshal(body, &kc); err != nil {
		return nil, fmt.Errorf("etsi014: decode %s response: %w", method, err)
	}
	return decodeContainer(&kc, want)
}

// decodeContainer base64-decodes the keys and, when want is set, checks that
// the container holds exactly those IDs in that order.
func decodeContainer(kc *KeyContainer, want []string) ([]KeyMaterial, error) {
	if want != nil && len(kc.Keys) != len(want) {
		return nil, fmt.Errorf("etsi014: KME returned %d keys, asked for %d", len(kc.Keys), len(want))
	}
	out := make([]KeyMaterial, len(kc.Keys))
	for i, k := range kc.Keys {
		if want != nil && !strings.EqualFold(k.KeyID, want[i]) {
			return nil, fmt.Errorf("etsi014: KME returned key %q at position %d, asked for %q", k.KeyID, i, want[i])
		}
		b, err := base64.StdEncoding.DecodeString(k.Key)
		if err != nil {
			return nil, fmt.Errorf("etsi014: key %q: bad base64: %w", k.KeyID, err)
		}
		out[i] = KeyMaterial{ID: k.KeyID, Key: b}
	}
	return out, nil
}

func (c *Client) do(ctx context.Context, method, u string, in, out any) error {
	body, err := c.send(ctx, method, u, in)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("etsi014: decode %s response: %w", method, err)
	}
	return nil
}

// send makes a call and returns the body of its 200 answer.
func (c *Client) send(ctx context.Context, method, u string, in any) ([]byte, error) {
	req := httpx.Request{Method: method, Path: u, Header: http.Header{"Accept": {"application/json"}}}
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("etsi014: encode request: %w", err)
		}
		req.Body, req.ContentType = b, "application/json"
	}
	resp, err := c.c.Send(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// parseContainerFast reads a Key container in the compact form a KME
// writes, {"keys":[{"key_ID":"…","key":"…"},…]} with at least one key and
// strings of printable ASCII without escapes, as json.Unmarshal would; ok
// is false for anything else, which json.Unmarshal then reads
// (FuzzParseContainerFast checks that both agree). For 128 keys the
// reflection decoder cost the SAE more than its TLS.
func parseContainerFast(body []byte) (kc *KeyContainer, ok bool) {
	s := string(body)
	rest, ok := strings.CutPrefix(s, `{"keys":[`)
	if !ok {
		return nil, false
	}
	kc = &KeyContainer{Keys: make([]Key, 0, min(strings.Count(rest, `{"key_ID":"`), 4096))}
	for {
		var id, key string
		if rest, ok = strings.CutPrefix(rest, `{"key_ID":"`); !ok {
			return nil, false
		}
		if id, rest, ok = plainjson.String(rest); !ok {
			return nil, false
		}
		if rest, ok = strings.CutPrefix(rest, `,"key":"`); !ok {
			return nil, false
		}
		if key, rest, ok = plainjson.String(rest); !ok {
			return nil, false
		}
		if rest, ok = strings.CutPrefix(rest, `}`); !ok {
			return nil, false
		}
		kc.Keys = append(kc.Keys, Key{KeyID: id, Key: key})
		if rest == `]}` {
			return kc, true
		}
		if rest, ok = strings.CutPrefix(rest, `,`); !ok {
			return nil, false
		}
	}
}

// decodeError reads the ETSI 014 Error object of a non-2xx answer (the
// standard's error format, not problem+json).
func decodeError(status int, _ http.Header, data []byte) error {
	e := &Error{StatusCode: status}
	if json.Unmarshal(data, e) != nil || e.Message == "" {
		e.Message = strings.TrimSpace(string(truncate(data, 200)))
		if e.Message == "" {
			e.Message = http.StatusText(status)
		}
	}
	return e
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
