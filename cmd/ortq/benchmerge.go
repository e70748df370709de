package main

import (
	"fmt"
	"path/filepath"

	"github.com/ortq/ortq/bench"
	"github.com/ortq/ortq/internal/fsutil"
	"github.com/spf13/cobra"
)

// newBenchMerge renders one report from several: the points of ortq results measured in
// separate `ortq bench` runs of one device call (scripts/gpu-policy.sh runs one per point)
// and their peers, with the frontier plot and the table at the peers' peak memory.
func newBenchMerge() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "merge REPORT.json... --out DIR",
		Short: "Merge ortq bench results (and --peer results) into one report with its plots",
		Long: `merge reads ortq bench results (report.json), keeps the first one's machine, runtime and
configuration, appends every point of the others in order, and writes DIR/report.json,
report.md and the plots (the frontier among them), with --peer results beside them as a
bench run with --peer would. Merge only results measured on the same machine in one call.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := options(cmd)
			if err != nil {
				return err
			}
			out := v.GetString("out")
			if out == "" {
				return usageError{fmt.Errorf("--out is required")}
			}
			merged, err := bench.ReadResult(args[0])
			if err != nil {
				return err
			}
			for _, a := range args[1:] {
				r, err := bench.ReadResult(a)
				if err != nil {
					return err
				}
				if r.Tool != merged.Tool {
					return usageError{fmt.Errorf("%s is a %s result, %s a %s one: pass peers with --peer", a, r.Tool, args[0], merged.Tool)}
				}
				merged.Points = append(merged.Points, r.Points...)
			}
			var peers bench.Peers
			for _, p := range splitList(v.GetStringSlice("peer")) {
				r, err := bench.ReadResult(p)
				if err != nil {
					return err
				}
				peers = append(peers, r)
			}
			return writeMerged(out, merged, peers)
		},
	}
	cmd.Flags().String("out", "", "directory for report.json, report.md and the plots (created)")
	cmd.Flags().StringSlice("peer", nil, "peer result JSON to show beside ortq's (repeatable)")
	return cmd
}

func writeMerged(out string, r *bench.Result, peers bench.Peers) error {
	lock, err := fsutil.LockDir(out) // one writer per --out, as bench; creates it
	if err != nil {
		return err
	}
	defer lock.Release()
	figs, err := writeBenchReport(out, r, peers)
	if err != nil {
		return err
	}
	fmt.Printf("report: %s (%d points, %d peers, %d plots)\n", filepath.Join(out, "report.md"), len(r.Points), len(peers), len(figs))
	return nil
}
