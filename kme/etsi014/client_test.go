package etsi014

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

// fakeKME answers with canned bodies and records the requests it got.
func fakeKME(t *testing.T, status int, body string, got *[]string) *Client {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		*got = append(*got, r.Method+" "+r.URL.RequestURI()+" "+string(b))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return NewWithHTTPClient(srv.URL+"/api/v1/keys/", srv.Client())
}

func TestRequestsFollowTheSpec(t *testing.T) {
	var got []string
	c := fakeKME(t, 200, `{"keys":[{"key_ID":"bc490419-7d60-487f-adc1-4ddcc177c139","key":"AAEC"}]}`, &got)
	ctx := context.Background()
	if _, err := c.EncKeys(ctx, "SAE B/1", 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.EncKeys(ctx, "B", 3, 512); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DecKeys(ctx, "A", "bc490419-7d60-487f-adc1-4ddcc177c139"); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"GET /api/v1/keys/SAE%20B%2F1/enc_keys ",
		`POST /api/v1/keys/B/enc_keys {"number":3,"size":512}`,
		"GET /api/v1/keys/A/dec_keys?key_ID=bc490419-7d60-487f-adc1-4ddcc177c139 ",
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("request %d: %q, want %q", i, got[i], want[i])
		}
	}
	got = nil
	c2 := fakeKME(t, 200, `{"keys":[{"key_ID":"a","key":"AA=="},{"key_ID":"b","key":"AA=="}]}`, &got)
	if _, err := c2.DecKeys(ctx, "A", "a", "b"); err != nil {
		t.Fatal(err)
	}
	if got[0] != `POST /api/v1/keys/A/dec_keys {"key_IDs":[{"key_ID":"a"},{"key_ID":"b"}]}` {
		t.Errorf("dec_keys POST: %q", got[0])
	}
	// A KME answering other IDs than asked is an error.
	if _, err := c2.DecKeys(ctx, "A", "b", "a"); err == nil {
		t.Fatal("out-of-order container accepted")
	}
}

func TestTypedErrors(t *testing.T) {
	var got []string
	for _, tc := range []struct {
		status int
		body   string
		is     error
		msg    string
	}{
		{400, `{"message":"size 100 is not a multiple of 8","details":[{"size":100}]}`, ErrBadRequest, "multiple of 8"},
		{401, `{"message":"nope"}`, ErrUnauthorized, "nope"},
		{503, `not json`, ErrUnavailable, "not json"},
	} {
		c := fakeKME(t, tc.status, tc.body, &got)
		_, err := c.Status(context.Background(), "B")
		var e *Error
		if !errors.As(err, &e) || e.StatusCode != tc.status || !errors.Is(err, tc.is) || !strings.Contains(e.Message, tc.msg) {
			t.Errorf("%d: %v", tc.status, err)
		}
	}
}

func FuzzDecodeContainer(f *testing.F) {
	f.Add([]byte(`{"keys":[{"key_ID":"a","key":"AAEC","key_ID_extension":{"x":1}}],"key_container_extension":null}`))
	f.Add([]byte(`{"keys":[{"key_ID":"a","key":"!!"}]}`))
	f.Add([]byte(`{"keys":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var kc KeyContainer
		if json.Unmarshal(b, &kc) != nil {
			return
		}
		ks, err := decodeContainer(&kc, nil)
		if err == nil && len(ks) != len(kc.Keys) {
			t.Fatal("lost keys")
		}
		if len(kc.Keys) > 0 {
			want := []string{kc.Keys[0].KeyID}
			if _, err := decodeContainer(&kc, want); err == nil && len(kc.Keys) != 1 {
				t.Fatal("accepted a container of the wrong length")
			}
		}
	})
}

// FuzzParseContainerFast checks the client's fast path against
// json.Unmarshal: whatever it accepts, json.Unmarshal reads to the same
// container.
func FuzzParseContainerFast(f *testing.F) {
	for _, s := range []string{
		`{"keys":[{"key_ID":"bc490419-7d60-487f-adc1-4ddcc177c139","key":"AAEC"}]}`,
		`{"keys":[{"key_ID":"a","key":"AAEC"},{"key_ID":"b","key":"+/=="}]}`,
		`{"keys":[{"key_ID":"a\u0062","key":"AAEC"}]}`,
		`{"keys":[{"key_ID":"a","key":"AAEC"}]} `,
		`{"keys":[]}`, `{"keys":[{"key_ID":"a","key":"AAEC"},]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		fast, ok := parseContainerFast(body)
		if !ok {
			return
		}
		var slow KeyContainer
		if err := json.Unmarshal(body, &slow); err != nil {
			t.Fatalf("fast path accepted %q, json.Unmarshal refuses it: %v", body, err)
		}
		if !reflect.DeepEqual(fast, &slow) {
			t.Fatalf("fast path read %+v, json.Unmarshal %+v", fast, slow)
		}
	})
}
