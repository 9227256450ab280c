package bootstraptoken

import (
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func tok(id string) Token { return Token{ID: id, Secret: "0123456789abcdef"} }

func TestDecide(t *testing.T) {
	p := DefaultPolicy()
	fresh := Issued{Token: tok("aaaaaa"), Created: t0, Expires: t0.Add(24 * time.Hour)}
	for _, tc := range []struct {
		name   string
		now    time.Time
		cur    Issued
		p      Policy
		rotate bool
		reason string
	}{
		{"just created", t0, fresh, p, false, "24h0m0s left"},
		{"two thirds left", t0.Add(8 * time.Hour), fresh, p, false, "16h0m0s of its 24h0m0s left"},
		{"exactly one third left", t0.Add(16 * time.Hour), fresh, p, false, "8h0m0s"},
		{"just under one third left", t0.Add(16*time.Hour + time.Second), fresh, p, true, "less than 8h0m0s"},
		{"an hour left", t0.Add(23 * time.Hour), fresh, p, true, "1h0m0s of its 24h0m0s left"},
		{"expired", t0.Add(24 * time.Hour), fresh, p, true, "expired at 2026-12-01T12:00:00Z"},
		{"long expired", t0.Add(100 * time.Hour), fresh, p, true, "expired"},
		{"old format, no expiry", t0, Issued{Token: tok("bbbbbb")}, p, true, "no expiry"},
		// The token's own life counts, not the policy's: a 48h token
		// under a 24h policy rotates at 16h left, not at 8h.
		{"own life, longer than the TTL", t0.Add(33 * time.Hour), Issued{Token: tok("cccccc"), Created: t0, Expires: t0.Add(48 * time.Hour)}, p, true, "of its 48h0m0s left"},
		{"own life, not yet", t0.Add(31 * time.Hour), Issued{Token: tok("cccccc"), Created: t0, Expires: t0.Add(48 * time.Hour)}, p, false, ""},
		{"no creation time: the policy's TTL is its life", t0.Add(17 * time.Hour), Issued{Token: tok("dddddd"), Expires: t0.Add(24 * time.Hour)}, p, true, "of its 24h0m0s left"},
		{"clock behind the creation", t0.Add(-time.Hour), fresh, p, false, ""},
		{"a half-life policy", t0.Add(13 * time.Hour), fresh, Policy{TTL: 24 * time.Hour, RotateFraction: 0.5}, true, "less than 12h0m0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(tc.now, tc.cur, tc.p)
			if d.Rotate != tc.rotate || !strings.Contains(d.Reason, tc.reason) || !strings.Contains(d.Reason, tc.cur.Token.ID) {
				t.Errorf("Decide = %+v, want rotate %v with %q", d, tc.rotate, tc.reason)
			}
		})
	}
}

func TestNext(t *testing.T) {
	p := DefaultPolicy()
	now := t0.Add(20 * time.Hour)
	old := Tokens{
		Current: Issued{Token: tok("cur000"), Created: t0, Expires: t0.Add(24 * time.Hour)},
		Previous: []Issued{
			{Token: tok("prev01"), Created: t0.Add(-16 * time.Hour), Expires: t0.Add(8 * time.Hour)}, // expired at now
			{Token: tok("prev02"), Created: t0.Add(-3 * time.Hour), Expires: t0.Add(21 * time.Hour)},
		},
	}
	next := Next(now, old, tok("new000"), p)
	if next.Current != (Issued{Token: tok("new000"), Created: now, Expires: now.Add(24 * time.Hour)}) {
		t.Errorf("current %+v", next.Current)
	}
	var ids []string
	for _, i := range next.Previous {
		ids = append(ids, i.Token.ID)
	}
	if strings.Join(ids, ",") != "cur000,prev02" {
		t.Errorf("previous %v, want the old current then the unexpired previous", ids)
	}
	if next.Previous[0].Expires != old.Current.Expires {
		t.Errorf("the old current's expiry changed: %v", next.Previous[0].Expires)
	}

	// A token of the old format gets an expiry: the overlap of a normal
	// rotation, so its Secret expires too.
	legacy := Next(now, Tokens{Current: Issued{Token: tok("legacy")}}, tok("new000"), p)
	if len(legacy.Previous) != 1 || legacy.Previous[0].Expires != now.Add(8*time.Hour) {
		t.Errorf("legacy previous %+v, want expiry %v", legacy.Previous, now.Add(8*time.Hour))
	}

	valid := next.Valid(now)
	if len(valid) != 3 || valid[0].Token.ID != "new000" {
		t.Errorf("Valid = %+v", valid)
	}
	if v := next.Valid(t0.Add(22 * time.Hour)); len(v) != 2 || v[1].Token.ID != "cur000" {
		t.Errorf("Valid after prev02 expired = %+v", v)
	}
}

func TestPolicyValidate(t *testing.T) {
	if err := DefaultPolicy().Validate(); err != nil {
		t.Fatal(err)
	}
	err := Policy{TTL: time.Minute, RotateFraction: 1}.Validate()
	if err == nil || !strings.Contains(err.Error(), "ttl: 1m0s is shorter") || !strings.Contains(err.Error(), "rotateFraction: 1 is not") {
		t.Fatalf("Validate = %v", err)
	}
}

func TestEncodeDecode(t *testing.T) {
	ts := Next(t0.Add(20*time.Hour), New(t0, tok("first0"), DefaultPolicy()), tok("second"), DefaultPolicy())
	b, err := Encode(ts)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"expires": "2026-12-02T08:00:00Z"`) || !strings.Contains(string(b), `"kind": "NodeBootstrapTokens"`) {
		t.Errorf("encoded:\n%s", b)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Current != ts.Current || len(got.Previous) != 1 || got.Previous[0] != ts.Previous[0] {
		t.Errorf("round trip: %+v, want %+v", got, ts)
	}

	old, err := Decode([]byte("abcdef.0123456789abcdef\n"))
	if err != nil || old.Current.Token.ID != "abcdef" || !old.Current.Expires.IsZero() || len(old.Previous) != 0 {
		t.Errorf("old format: %+v, %v", old, err)
	}
	if _, err := Encode(old); err == nil || !strings.Contains(err.Error(), "expires") {
		t.Errorf("Encode of a token without expiry: %v", err)
	}

	for _, tc := range []struct{ doc, want string }{
		{`{"kind":"NodeBootstrapTokens","version":1,"current":{"token":"abcdef.0123456789abcdef","created":"2026-11-30T00:00:00Z","expires":"2026-12-01T00:00:00Z"},"extra":1}`, `unknown field "extra"`},
		{`{"kind":"NodeBootstrapTokens","version":2,"current":{"token":"abcdef.0123456789abcdef","created":"2026-11-30T00:00:00Z","expires":"2026-12-01T00:00:00Z"}}`, "version: 2 is not supported"},
		{`{"kind":"Other","version":1,"current":{"token":"abcdef.0123456789abcdef","created":"2026-11-30T00:00:00Z","expires":"2026-12-01T00:00:00Z"}}`, `kind: "Other"`},
		{`{"kind":"NodeBootstrapTokens","version":1,"current":{"token":"abcdef","created":"2026-11-30T00:00:00Z","expires":"2026-12-01T00:00:00Z"}}`, "current.token: bootstrap token is not of the form"},
		{`{"kind":"NodeBootstrapTokens","version":1,"current":{"token":"abcdef.0123456789abcdef","created":"2026-11-30T00:00:00Z"}}`, "current.expires"},
		{`{"kind":"NodeBootstrapTokens","version":1,"current":{"token":"abcdef.0123456789abcdef","created":"2026-11-30T00:00:00Z","expires":"2026-12-01T00:00:00Z"},"previous":[{"token":"abcdef.0123456789abcdef","created":"2026-11-30T00:00:00Z","expires":"2026-11-29T00:00:00Z"}]}`, "previous[0].expires"},
		{`{"kind":`, "decoding NodeBootstrapTokens"},
		{"not a token", "bootstrap token is not of the form"},
	} {
		if _, err := Decode([]byte(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Decode(%s) = %v, want %q", tc.doc, err, tc.want)
		}
	}
}

// FuzzDecode: any stored object either fails to decode with an error or
// decodes to tokens that encode and decode to themselves.
func FuzzDecode(f *testing.F) {
	f.Add("abcdef.0123456789abcdef\n")
	f.Add(`{"kind":"NodeBootstrapTokens","version":1,"current":{"token":"abcdef.0123456789abcdef","created":"2026-11-30T00:00:00Z","expires":"2026-12-01T00:00:00Z"}}`)
	f.Add(`{"kind":"NodeBootstrapTokens","version":1,"current":{"token":"abcdef.0123456789abcdef","created":"2026-11-30T00:00:00Z","expires":"2026-12-01T00:00:00Z"},"previous":[{"token":"zzzzzz.0123456789abcdef","created":"2026-11-29T00:00:00Z","expires":"2026-11-30T08:00:00Z"}]}`)
	f.Add("{")
	f.Fuzz(func(t *testing.T, s string) {
		ts, err := Decode([]byte(s))
		if err != nil {
			return
		}
		if ts.Current.Expires.IsZero() {
			return // the old format: Encode requires an expiry only through Next
		}
		b, err := Encode(ts)
		if err != nil {
			t.Fatalf("Encode of decoded %q: %v", s, err)
		}
		again, err := Decode(b)
		if err != nil || !again.Current.Expires.Equal(ts.Current.Expires) || again.Current.Token != ts.Current.Token || len(again.Previous) != len(ts.Previous) {
			t.Fatalf("round trip of %q: %+v, %v", s, again, err)
		}
	})
}
