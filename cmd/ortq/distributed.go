package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/ortq/ortq/dist"
	"github.com/ortq/ortq/internal/nccl"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/train"
	"github.com/ortq/ortq/train/optim"
)

// envLaunched marks the children of `train --nproc-per-node`: they run as ranks and do
// not launch again, whatever --nproc-per-node a config file or the environment gives.
const envLaunched = "ORTQ_LAUNCHED_RANK"

// addDistFlags adds train's flags for data parallelism over processes (docs/distributed.md).
func addDistFlags(f *pflag.FlagSet) {
	f.String("nproc-per-node", "", "data parallelism through NCCL, one process per GPU: start N ranks on this host on the first N GPUs of --device "+
		"(cuda: GPUs 0 … N−1; \"all\": one per GPU of --device, e.g. cuda:all), each pinned to its GPU with CUDA_VISIBLE_DEVICES; see docs/distributed.md")
	f.Int("nnodes", 1, "with --nproc-per-node: the number of hosts of the run, each launching its own ranks")
	f.Int("node-rank", 0, "with --nproc-per-node and --nnodes: this host's place, 0 (the host of --master-addr) to nnodes−1")
	f.Int("rank", -1, "this process's rank in a data-parallel run started by hand or by another launcher (default: $RANK)")
	f.Int("world-size", -1, "the number of ranks of the run (default: $WORLD_SIZE); with it each process trains on one GPU (--device cuda: cuda:$LOCAL_RANK)")
	f.String("master-addr", "", "host:port where rank 0 listens for the others (default: $MASTER_ADDR:$MASTER_PORT; with --nproc-per-node: a free local port)")
	f.Duration("dist-timeout", dist.DefaultTimeout, "how long a rank may stay silent, and one all-reduce or the rendezvous may wait, "+
		"before every rank stops naming it")
	f.Int("dist-check-every", 10, "compare a checksum of the LoRA weights across the ranks every N optimizer steps (0: never)")
	f.String("nccl-lib", "", "path of libnccl.so.2 (default: $"+nccl.EnvLib+
		", then $LD_LIBRARY_PATH, Python's nvidia/nccl/lib and the system's library directories)")
}

// distAllowCPU lets a rank train on the CPU: set by tests, which run ranks on a stand-in
// NCCL whose "device" memory is host memory.
var distAllowCPU = false

// distRun is a rank's part of a data-parallel run over processes (nil: not one).
type distRun struct {
	cfg     dist.Config
	dev     int    // the CUDA device ordinal
	libPath string // libnccl.so.2
	every   int    // --dist-check-every
	tmpOut  string // rank > 0: where the run's files go, removed at the end
	resume  string // rank > 0: the checkpoint directory to resume from
	coll    *dist.NCCL
}

// launchTrain starts one rank per GPU when --nproc-per-node asks for it; handled is false
// when it does not (or this process is one of the ranks).
func launchTrain(v *viper.Viper) (handled bool, err error) {
	nproc := strings.TrimSpace(v.GetString("nproc-per-node"))
	if nproc == "" || os.Getenv(envLaunched) != "" {
		return false, nil
	}
	if os.Getenv("WORLD_SIZE") != "" || v.GetInt("world-size") >= 0 || v.GetInt("rank") >= 0 {
		return true, usageError{errors.New("--nproc-per-node launches the ranks itself: drop it under torchrun or with --rank/--world-size")}
	}
	devs, err := parseDevices(v.GetString("device"))
	if err != nil {
		return true, err
	}
	var gpus []int
	for _, d := range devs {
		p, id, _ := ortrun.ParseDevice(d)
		if p != "cuda" {
			return true, usageError{fmt.Errorf("--nproc-per-node runs one process per GPU: --device %q names no GPU "+
				"(pass cuda:all or cuda:0,cuda:1)", v.GetString("device"))}
		}
		gpus = append(gpus, id)
	}
	if nproc != "all" {
		n, err := strconv.Atoi(nproc)
		switch {
		case err != nil || n < 1:
			return true, usageError{fmt.Errorf("--nproc-per-node %q: want a number ≥ 1 or all", nproc)}
		case len(devs) == 1 && devs[0] == "cuda": // GPUs 0 … n−1, as torchrun takes them
			gpus = gpus[:0]
			for i := range n {
				gpus = append(gpus, i)
			}
		case n > len(gpus):
			return true, usageError{fmt.Errorf("--nproc-per-node %d but --device %q names %d GPU(s): name as many (or cuda:all), or pass all", n,
				v.GetString("device"), len(gpus))}
		default:
			gpus = gpus[:n] // the first n of the list
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return true, err
	}
	args := append(dropFlags(os.Args[1:], "nproc-per-node", "device", "nnodes", "node-rank"), "--device", "cuda:0")
	err = dist.Launch(context.Background(), dist.LaunchSpec{Exe: exe, Args: args, GPUs: gpus, MasterAddr: v.GetString("master-addr"),
		Nodes: v.GetInt("nnodes"), NodeRank: v.GetInt("node-rank"),
		Timeout: v.GetDuration("dist-timeout"), Stdout: os.Stdout, Stderr: os.Stderr, Env: []string{envLaunched + "=1"}})
	return true, err
}

// dropFlags removes --name VALUE and --name=VALUE for each name from args.
func dropFlags(args []string, names ...string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		drop := false
		for _, n := range names {
			switch {
			case args[i] == "--"+n:
				drop = true
				i++ // its value
			case strings.HasPrefix(args[i], "--"+n+"="):
				drop = true
			}
		}
		if !drop {
			out = append(out, args[i])
		}
	}
	return out
}

// distSetup resolves a rank's place in a data-parallel run from the flags and torchrun's
// environment (nil: not distributed), refuses what a rank cannot do and checks that NCCL is
// there, before anything is read or written; a rank > 0 writes into a temporary directory
// instead of --out (rank 0 alone writes the run's files).
func distSetup(v *viper.Viper, f *trainSetup) (*distRun, error) {
	c, ok, err := dist.Resolve(dist.Flags{Rank: v.GetInt("rank"), WorldSize: v.GetInt("world-size"), MasterAddr: v.GetString("master-addr")},
		os.LookupEnv, v.GetDuration("dist-timeout"))
	if err != nil || !ok {
		return nil, usageErr(err)
	}
	if v.GetInt("dist-check-every") < 0 {
		return nil, usageError{fmt.Errorf("--dist-check-every %d: want ≥ 0", v.GetInt("dist-check-every"))}
	}
	d := &distRun{cfg: c, every: v.GetInt("dist-check-every")}
	if len(f.devs) == 1 && f.devs[0] == "cuda" {
		f.devs[0] = "cuda:" + strconv.Itoa(c.LocalRank)
	}
	p, id, _ := ortrun.ParseDevice(f.devs[0])
	if len(f.devs) != 1 || p != "cuda" && !(distAllowCPU && p == "cpu") {
		return nil, usageError{fmt.Errorf("--world-size %d: each rank trains on one GPU: pass --device cuda (cuda:$LOCAL_RANK) or cuda:N, not %q",
			c.WorldSize, strings.Join(f.devs, ","))}
	}
	d.dev = id
	if d.libPath, err = nccl.FindLibrary(v.GetString("nccl-lib")); err != nil {
		return nil, fmt.Errorf("rank %d: %w", c.Rank, err)
	}
	if c.Rank > 0 {
		if err := d.privateOut(v, f); err != nil {
			return nil, err
		}
	} else if note := idleDevicesNote(make([]string, c.WorldSize), v.GetInt("grad-accum")); note != "" {
		fmt.Fprintln(os.Stderr, strings.ReplaceAll(note, "devices", "ranks"))
	}
	return d, nil
}

func usageErr(err error) error {
	if err == nil {
		return nil
	}
	return usageError{err}
}

// privateOut points a rank > 0 at a temporary directory, and at rank 0's newest checkpoint
// under --out when resuming (on several hosts --out must be a directory every host sees).
func (d *distRun) privateOut(v *viper.Viper, f *trainSetup) error {
	d.resume = v.GetString("resume")
	if d.resume == "latest" {
		root := filepath.Join(f.out, train.CheckpointsDir)
		dirs, err := train.ListCheckpoints(root)
		if err != nil || len(dirs) == 0 {
			return fmt.Errorf("rank %d: --resume latest: no checkpoint in %s (%v); every host must see rank 0's --out, or copy its newest checkpoint there",
				d.cfg.Rank, root, err)
		}
		d.resume = dirs[len(dirs)-1]
	}
	v.Set("sample-prompt", []string{}) // rank 0 samples; no other rank exports a decoder
	tmp, err := os.MkdirTemp("", fmt.Sprintf("ortq-rank%d-", d.cfg.Rank))
	if err != nil {
		return err
	}
	d.tmpOut, f.out = tmp, tmp
	return nil
}

// connect joins the rendezvous and the NCCL communicator, after the engines are open (so
// that NCCL uses the CUDA runtime ONNX Runtime's CUDA provider loaded), and returns ctx
// ended when another rank fails.
func (d *distRun) connect(ctx context.Context, engines []*train.Engine) (context.Context, error) {
	if d == nil {
		return ctx, nil
	}
	coll, err := dist.Setup(ctx, d.cfg, d.libPath, d.dev)
	if err != nil {
		return ctx, err
	}
	d.coll = coll
	engines[0].Notes = append(engines[0].Notes, fmt.Sprintf("data-parallel over %d ranks (one process per GPU) through NCCL %d (%s): each rank's device step "+
		"accumulates its micro-batches, ncclAllReduce sums the gradient sums in device memory, "+
		"every rank applies the same AdamW on its GPU (the optimizer graph); LoRA checksums compared every %d steps",
		d.cfg.WorldSize, coll.Lib.Version, coll.Lib.Path, d.every))
	ctx, cancel := context.WithCancelCause(ctx)
	context.AfterFunc(coll.Group.Context(), func() { cancel(coll.Group.Err()) })
	return ctx, nil
}

// configure makes the run's stepper the rank's, and silences a rank > 0.
func (d *distRun) configure(cfg *train.Config, engines []*train.Engine) {
	if d == nil {
		return
	}
	eng, every := engines[0], d.every
	cfg.NewStepper = func(init []optim.Param, sc train.StepConfig, rows, seq int) (train.Stepper, error) {
		return train.NewRankStepper(eng, init, sc, rows, seq, d.coll, every)
	}
	cfg.Device = fmt.Sprintf("%s on each of %d ranks", cfg.Device, d.cfg.WorldSize)
	if d.cfg.Rank > 0 {
		cfg.Quiet, cfg.LogEvery = true, 0
		if d.resume != "" {
			cfg.Resume = d.resume
		}
	}
}

// cause is the run's error: another rank's failure when there was one (train.Run sees it as
// an interruption: rank 0 has checkpointed the last complete step), else err.
func (d *distRun) cause(err error) error {
	if d != nil && d.coll != nil {
		if gerr := d.coll.Group.Err(); gerr != nil {
			return gerr
		}
	}
	return err
}

// finish ends the rank's part: after a failure elsewhere that rank's error is the result
// (exit status dist.ExitPeer); a failure here is told to the others first.
func (d *distRun) finish(err error) error {
	if d == nil {
		return err
	}
	if d.coll != nil {
		if gerr := d.coll.Group.Err(); gerr != nil {
			err = gerr
		} else if err != nil {
			d.coll.Group.Abort(err)
		}
		d.coll.Close()
	}
	if d.tmpOut != "" {
		os.RemoveAll(d.tmpOut)
	}
	return err
}
