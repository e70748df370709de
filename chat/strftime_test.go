package chat

import (
	"testing"
	"time"
)

// TestStrftime: the directives chat templates use, against what Python's strftime writes
// for the same instant (C locale).
func TestStrftime(t *testing.T) {
	at := time.Date(2024, 7, 6, 15, 4, 5, 0, time.UTC)
	for format, want := range map[string]string{
		"%d %b %Y":         "06 Jul 2024", // Llama 3.1-3.3's "Today Date"
		"%Y-%m-%d":         "2024-07-06",
		"%A, %B %e, %y":    "Saturday, July  6, 24",
		"%H:%M:%S %I%p %j": "15:04:05 03PM 188",
		"100%% %a %h %q":   "100% Sat Jul %q",
		"trailing %":       "trailing %",
		"no directives":    "no directives",
	} {
		if got := strftime(at, format); got != want {
			t.Errorf("strftime(%q) = %q, want %q", format, got, want)
		}
	}
	tpl, err := Parse("t", "{{ strftime_now('%Y') }}", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tpl.Render(nil, false); err != nil || got != time.Now().Format("2006") {
		t.Errorf("strftime_now: %q, %v", got, err)
	}
}
