package dist

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// beatEvery is the heartbeat period for a silence limit of timeout.
func beatEvery(timeout time.Duration) time.Duration { return min(time.Second, timeout/10) }

// start runs a reader per connection, the heartbeats and the watchdog.
func (g *Group) start() {
	now := time.Now().UnixNano()
	for _, p := range g.peers {
		p.last.Store(now)
		g.wg.Add(1)
		go g.read(p)
	}
	if len(g.peers) == 0 {
		return
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		t := time.NewTicker(beatEvery(g.timeout))
		defer t.Stop()
		for {
			select {
			case <-g.stop:
				return
			case <-t.C:
			}
			for _, p := range g.peers {
				if p.quit.Load() {
					continue
				}
				if silent := time.Since(time.Unix(0, p.last.Load())); silent > g.timeout {
					g.fail(peerf("rank %d stopped answering (silent for %v, --dist-timeout %v)", p.rank, silent.Round(time.Millisecond), g.timeout))
					return
				}
				g.send(p, frameBeat, nil)
			}
		}
	}()
}

// read handles one connection's frames until it ends.
func (g *Group) read(p *peer) {
	defer g.wg.Done()
	for {
		f, err := readFrame(p.conn)
		if err != nil {
			if !p.quit.Load() && !g.closing.Load() {
				g.fail(peerf("rank %d exited or lost its connection (%v)", p.rank, err))
			}
			return
		}
		p.last.Store(time.Now().UnixNano())
		switch f.typ {
		case frameAbort:
			g.fail(&PeerError{string(f.data)})
			return
		case frameQuit:
			p.quit.Store(true)
		case frameCheck, frameReply:
			select {
			case p.checks <- f:
			default:
				g.fail(fmt.Errorf("rank %d sent a checksum out of turn", p.rank))
			}
		}
	}
}

func (g *Group) send(p *peer, typ byte, data []byte) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.conn.SetWriteDeadline(time.Now().Add(g.timeout))
	return writeFrame(p.conn, typ, data)
}

// ExitPeer is the exit status of a rank that stops because another rank failed (a
// PeerError), so that the launcher names the rank that failed first, not one it took down.
const ExitPeer = 75

// PeerError is why a rank stopped when another rank failed or stopped answering.
type PeerError struct{ Msg string }

func (e *PeerError) Error() string { return e.Msg }

// fail ends the run for this rank with err; rank 0 tells every other rank why, before
// this rank's Context ends (after which the process may exit at once).
func (g *Group) fail(err error) {
	if g.closing.Load() || g.failed.Swap(true) {
		return
	}
	if g.Rank == 0 {
		for _, p := range g.peers {
			g.send(p, frameAbort, []byte(err.Error()))
		}
	}
	g.cancel(err)
}

func peerf(format string, a ...any) error { return &PeerError{fmt.Sprintf(format, a...)} }

// Context is cancelled, with Err as its cause, when another rank fails or stops answering.
func (g *Group) Context() context.Context { return g.ctx }

// Err is why the run stopped for this rank (nil while it runs).
func (g *Group) Err() error {
	if g.ctx.Err() == nil {
		return nil
	}
	return context.Cause(g.ctx)
}

// Abort stops the run on every rank with err, which it prefixes with this rank; rank 0
// passes it on to the others.
func (g *Group) Abort(err error) {
	err = fmt.Errorf("rank %d: %w", g.Rank, err)
	if g.Rank != 0 && len(g.peers) == 1 && g.ctx.Err() == nil {
		g.send(g.peers[0], frameAbort, []byte(err.Error()))
	}
	g.fail(err)
}

// Agree checks that every rank has the same sum at step (all ranks must call it at the
// same step): nil when they do, else an error naming the ranks that differ.
func (g *Group) Agree(ctx context.Context, step int64, sum uint64) error {
	if g.World == 1 {
		return nil
	}
	var msg [16]byte
	binary.BigEndian.PutUint64(msg[:8], uint64(step))
	binary.BigEndian.PutUint64(msg[8:], sum)
	if g.Rank != 0 {
		if err := g.send(g.peers[0], frameCheck, msg[:]); err != nil {
			return fmt.Errorf("checksum at step %d: %w", step, err)
		}
		r, err := g.await(ctx, g.peers[0])
		if err != nil || len(r.data) == 0 {
			return err
		}
		return errors.New(string(r.data))
	}
	var bad string
	for _, p := range g.peers {
		f, err := g.await(ctx, p)
		if err != nil {
			return err
		}
		s, v := int64(binary.BigEndian.Uint64(f.data[:8])), binary.BigEndian.Uint64(f.data[8:])
		if bad == "" && (s != step || v != sum) {
			bad = fmt.Sprintf("the ranks' LoRA weights differ: rank 0 has checksum %016x at step %d, rank %d %016x at step %d", sum, step, p.rank, v, s)
		}
	}
	for _, p := range g.peers {
		g.send(p, frameReply, []byte(bad))
	}
	if bad != "" {
		return errors.New(bad)
	}
	return nil
}

func (g *Group) await(ctx context.Context, p *peer) (frame, error) {
	t := time.NewTimer(g.timeout)
	defer t.Stop()
	select {
	case f := <-p.checks:
		if f.typ == frameCheck && len(f.data) != 16 {
			return f, fmt.Errorf("rank %d sent a malformed checksum", p.rank)
		}
		return f, nil
	case <-g.ctx.Done():
		return frame{}, g.Err()
	case <-ctx.Done():
		return frame{}, ctx.Err()
	case <-t.C:
		return frame{}, fmt.Errorf("rank %d sent no checksum within --dist-timeout %v", p.rank, g.timeout)
	}
}

// Close ends this rank's membership cleanly: the others are told, so that its leaving is
// not a failure.
func (g *Group) Close() {
	if g.closing.Swap(true) {
		return
	}
	for _, p := range g.peers {
		g.send(p, frameQuit, nil)
	}
	g.shut()
	g.wg.Wait()
	g.cancel(errors.New("the group is closed"))
}

// shut closes the listener and every connection and stops the heartbeats.
func (g *Group) shut() {
	select {
	case <-g.stop:
	default:
		close(g.stop)
	}
	if g.ln != nil {
		g.ln.Close()
	}
	for _, p := range g.peers {
		if p != nil {
			p.conn.Close()
		}
	}
}
