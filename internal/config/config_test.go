package config

import (
	"strings"
	"testing"
	"time"
)

type fakeFlags map[string]string

func (f fakeFlags) Changed(n string) bool { _, ok := f[n]; return ok }
func (f fakeFlags) Value(n string) (string, bool) {
	v, ok := f[n]
	return v, ok
}

// TestPrecedence: flags > environment > file > defaults, each value
// reporting its source.
func TestPrecedence(t *testing.T) {
	env := map[string]string{"QSHIELD_DB_MAX_OPEN_CONNS": "12", "QSHIELD_LISTEN": "127.0.0.1:7000", "QSHIELD_LOG_LEVEL": "debug"}
	r, err := Resolve("testdata/node.json", func(k string) string { return env[k] }, fakeFlags{"log-level": "warn"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key  string
		got  any
		want any
		src  Source
	}{
		{"db_max_open_conns", r.DBMaxOpenConns, 12, FromEnv}, // env beats file
		{"listen", r.Listen, "127.0.0.1:7000", FromEnv},      // env beats file
		{"log_format", r.LogFormat, "text", FromFile},        // file beats default
		{"http_queue_timeout", r.HTTPQueueTimeout, 500 * time.Millisecond, FromFile},
		{"insecure_http", r.InsecureHTTP, true, FromFile},
		{"log_level", r.LogLevel, "warn", FromFlag}, // flag beats env
		{"http_max_in_flight", r.HTTPMaxInFlight, 256, FromDefault},
	}
	for _, tt := range tests {
		if tt.got != tt.want || r.Sources[tt.key] != tt.src {
			t.Errorf("%s = %v from %s, want %v from %s", tt.key, tt.got, r.Sources[tt.key], tt.want, tt.src)
		}
	}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestConfigFromEnvVariable(t *testing.T) {
	env := map[string]string{EnvConfig: "testdata/node.json"}
	r, err := Resolve("", func(k string) string { return env[k] }, nil)
	if err != nil || r.DBMaxOpenConns != 10 || r.File != "testdata/node.json" {
		t.Fatalf("%+v %v", r, err)
	}
}

func TestBadInput(t *testing.T) {
	files := map[string]string{
		"unknown key":   `{"db_max_conns": 3}`,
		"wrong type":    `{"db_max_open_conns": "many"}`,
		"bad duration":  `{"http_queue_timeout": "soon"}`,
		"duration int":  `{"http_queue_timeout": 5}`,
		"not an object": `[1,2]`,
		"trailing":      `{} {}`,
	}
	for name, f := range files {
		c := Defaults()
		if _, err := parseFile([]byte(f), &c); err == nil {
			t.Errorf("%s: accepted", name)
		} else if c != Defaults() {
			t.Errorf("%s: config changed on error", name)
		}
	}
	for _, env := range []map[string]string{{"QSHIELD_HTTP_MAX_IN_FLIGHT": "x"}, {"QSHIELD_INSECURE_HTTP": "maybe"}, {"QSHIELD_DB_LOCK_TIMEOUT": "1 hour"}} {
		if _, err := Resolve("", func(k string) string { return env[k] }, nil); err == nil {
			t.Errorf("%v accepted", env)
		}
	}
	invalid := []func(*Config){
		func(c *Config) { c.LogFormat = "xml" },
		func(c *Config) { c.LogLevel = "loud" },
		func(c *Config) { c.DBMaxOpenConns = 0 },
		func(c *Config) { c.HTTPMaxInFlight = 0 },
		func(c *Config) { c.DBStatementTimeout = time.Minute },
		func(c *Config) { c.HTTPMaxConns = 10 },
		func(c *Config) { c.DBSQLiteMmapMiB = -1 },
	}
	for i, f := range invalid {
		c := Defaults()
		f(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("invalid config %d accepted", i)
		}
	}
	if err := (&Config{}).Validate(); err == nil || !strings.Contains(err.Error(), "log_format") {
		t.Errorf("zero config: %v", err)
	}
}

// FuzzParseFile: any input either parses into a configuration whose values
// survive a round trip through their text form, or is refused with the
// configuration unchanged.
func FuzzParseFile(f *testing.F) {
	f.Add([]byte(`{"db_max_open_conns": 10, "log_format": "text"}`))
	f.Add([]byte(`{"http_queue_timeout": "1.5s", "insecure_http": false}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c := Defaults()
		keys, err := parseFile(b, &c)
		if err != nil {
			if c != Defaults() {
				t.Fatal("changed on error")
			}
			return
		}
		for _, s := range Settings() {
			d := Defaults()
			if err := set(s, &d, c.Value(s)); err != nil || d.Value(s) != c.Value(s) {
				t.Fatalf("%s: %q does not round-trip: %v", s.Key, c.Value(s), err)
			}
		}
		if len(keys) > len(Settings()) {
			t.Fatalf("%d keys", len(keys))
		}
	})
}

// TestWatermarkChallengesDefault: scanner challenges are on unless a node
// opts out (environment, file or flag "false").
func TestWatermarkChallengesDefault(t *testing.T) {
	r, err := Resolve("", func(string) string { return "" }, nil)
	if err != nil || !r.WatermarkChallenges || r.Sources["watermark_challenges"] != FromDefault {
		t.Fatalf("default: %v from %s (%v), want on", r.WatermarkChallenges, r.Sources["watermark_challenges"], err)
	}
	env := map[string]string{"QSHIELD_WATERMARK_CHALLENGES": "false"}
	r, err = Resolve("", func(k string) string { return env[k] }, nil)
	if err != nil || r.WatermarkChallenges {
		t.Fatalf("opt-out by environment: %v (%v)", r.WatermarkChallenges, err)
	}
	r, err = Resolve("", func(k string) string { return env[k] }, fakeFlags{"watermark-challenges": "true"})
	if err != nil || !r.WatermarkChallenges {
		t.Fatalf("flag over environment: %v (%v)", r.WatermarkChallenges, err)
	}
}
