package wallet

import (
	"regexp"
	"testing"
)

// TestWalletViewsAreSiblings: every view of the wallet page is a section
// directly in <main>, closed before the next one opens, and the status line
// follows them. app.js shows one view by hiding every other `main > section`;
// a view left open swallows the views after it (and the status line) into a
// hidden section — a merge once did exactly that.
func TestWalletViewsAreSiblings(t *testing.T) {
	page, err := assets.ReadFile("assets/index.html")
	if err != nil {
		t.Fatal(err)
	}
	tags := regexp.MustCompile(`<(/?)(section|main)\b[^>]*?(?:id="([^"]*)")?[^>]*>|<p id="status"`).FindAllSubmatch(page, -1)
	depth, inMain, views, status := 0, false, 0, false
	for _, m := range tags {
		closing, name, id := string(m[1]) == "/", string(m[2]), string(m[3])
		switch {
		case string(m[0]) == `<p id="status"`:
			if !inMain || depth != 0 {
				t.Errorf("the status line is inside a view (depth %d)", depth)
			}
			status = true
		case name == "main":
			inMain = !closing
		case !closing:
			if !inMain || depth != 0 {
				t.Errorf("view %q opens inside another view or outside <main>", id)
			}
			depth++
			views++
		default:
			depth--
			if depth < 0 {
				t.Fatal("a </section> closes nothing")
			}
		}
	}
	if depth != 0 || views < 10 || !status {
		t.Fatalf("%d views, %d left open, status line found %v", views, depth, status)
	}
}
