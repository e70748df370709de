package passes

import "github.com/ortq/ortq/ortgraph"

// FusionResult says what a fusing pass (RMSNorm, Rotary) did.
type FusionResult struct {
	Fused   int      // patterns replaced
	Skipped []string // matches left as they are, with the reason
}

// report logs the matches left alone, with their reasons, and the count fused as what.
func (r *FusionResult) report(ctx *ortgraph.Context, pass, what string) {
	for _, s := range r.Skipped {
		ctx.Logf("%s: left as it is: %s", pass, s)
	}
	if r.Fused > 0 {
		ctx.Logf("%s: %d %s", pass, r.Fused, what)
	}
}
