package dist

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Frame types of the rendezvous protocol: a byte, a uint32 length, the payload.
const (
	frameHello = 'H' // rank, world size (int32 each), to rank 0
	framePay   = 'P' // the payload, from rank 0
	frameBeat  = 'B' // heartbeat, both ways
	frameAbort = 'A' // the reason the run stops, from rank 0
	frameCheck = 'C' // step (int64), checksum (uint64), to rank 0
	frameReply = 'R' // "" or the mismatch, from rank 0
	frameQuit  = 'Q' // a clean end
)

type frame struct {
	typ  byte
	data []byte
}

// Group is a process's membership of a run, after Join.
type Group struct {
	Rank, World int
	Payload     []byte // rank 0's payload, as every rank received it
	timeout     time.Duration
	ctx         context.Context
	cancel      context.CancelCauseFunc
	ln          net.Listener
	peers       []*peer // rank 0: one per other rank (index rank−1); others: rank 0's
	closing     atomic.Bool
	failed      atomic.Bool
	stop        chan struct{}
	wg          sync.WaitGroup
}

// peer is the connection to one other rank.
type peer struct {
	rank   int
	conn   net.Conn
	wmu    sync.Mutex
	last   atomic.Int64 // UnixNano of the last frame read
	quit   atomic.Bool
	checks chan frame
}

// Join takes part in the rendezvous of c: rank 0 listens on c.MasterAddr, waits for every
// other rank and sends each payload; the others connect (retrying while rank 0 is not up
// yet) and receive it. Every rank must join within c.Timeout. A world of one needs no
// network: Payload is payload.
func Join(ctx context.Context, c Config, payload []byte) (*Group, error) {
	if err := c.Check(); err != nil {
		return nil, err
	}
	g := &Group{Rank: c.Rank, World: c.WorldSize, timeout: c.Timeout, stop: make(chan struct{})}
	g.ctx, g.cancel = context.WithCancelCause(context.Background())
	var err error
	switch {
	case c.WorldSize == 1:
		g.Payload = payload
	case c.Rank == 0:
		err = g.serve(ctx, c.MasterAddr, payload)
	default:
		err = g.dial(ctx, c.MasterAddr)
	}
	if err != nil {
		g.shut()
		return nil, err
	}
	g.start()
	return g, nil
}

// serve is rank 0's side of the rendezvous.
func (g *Group) serve(ctx context.Context, addr string, payload []byte) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("rendezvous: rank 0 cannot listen on --master-addr %s: %w", addr, err)
	}
	g.ln = ln
	deadline := time.Now().Add(g.timeout)
	g.peers = make([]*peer, g.World-1)
	stopAccept := context.AfterFunc(ctx, func() { ln.Close() })
	defer stopAccept()
	for joined := 0; joined < g.World-1; {
		ln.(*net.TCPListener).SetDeadline(deadline)
		conn, err := ln.Accept()
		if err != nil {
			return fmt.Errorf("rendezvous on %s: %d of %d ranks joined within %v (missing: %s): %w", addr, joined+1, g.World, g.timeout, g.missing(), err)
		}
		conn.SetDeadline(deadline)
		p := &peer{conn: conn, checks: make(chan frame, 1)}
		rank, world, err := readHello(conn)
		switch {
		case err != nil:
			conn.Close()
			continue // not a rank of this run (a port scan, a stale process)
		case world != g.World:
			writeFrame(conn, frameAbort, fmt.Appendf(nil, "rank %d has --world-size %d, rank 0 %d", rank, world, g.World))
			return fmt.Errorf("rendezvous: rank %d has --world-size %d, rank 0 %d", rank, world, g.World)
		case rank < 1 || rank >= g.World || g.peers[rank-1] != nil:
			writeFrame(conn, frameAbort, fmt.Appendf(nil, "rank %d joined twice or is out of range", rank))
			return fmt.Errorf("rendezvous: rank %d joined twice or is outside world size %d (check every process's --rank)", rank, g.World)
		}
		p.rank = rank
		g.peers[rank-1] = p
		joined++
	}
	for _, p := range g.peers {
		if err := writeFrame(p.conn, framePay, payload); err != nil {
			return fmt.Errorf("rendezvous: sending rank %d the id: %w", p.rank, err)
		}
		p.conn.SetDeadline(time.Time{})
	}
	g.Payload = payload
	return nil
}

func (g *Group) missing() string {
	var s string
	for i, p := range g.peers {
		if p == nil {
			s += fmt.Sprintf(" %d", i+1)
		}
	}
	return s[min(1, len(s)):]
}

// dial is a non-zero rank's side of the rendezvous.
func (g *Group) dial(ctx context.Context, addr string) error {
	deadline := time.Now().Add(g.timeout)
	var conn net.Conn
	var err error
	for {
		d := net.Dialer{Deadline: deadline}
		if conn, err = d.DialContext(ctx, "tcp", addr); err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("rendezvous: rank %d cannot reach rank 0 at %s within %v: %w", g.Rank, addr, g.timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	conn.SetDeadline(deadline)
	g.peers = []*peer{{rank: 0, conn: conn, checks: make(chan frame, 1)}}
	var hello [8]byte
	binary.BigEndian.PutUint32(hello[:4], uint32(g.Rank))
	binary.BigEndian.PutUint32(hello[4:], uint32(g.World))
	if err := writeFrame(conn, frameHello, hello[:]); err != nil {
		return fmt.Errorf("rendezvous: rank %d to rank 0 at %s: %w", g.Rank, addr, err)
	}
	f, err := readFrame(conn)
	switch {
	case err != nil:
		return fmt.Errorf("rendezvous: rank %d waiting for rank 0 at %s (every rank must join within %v): %w", g.Rank, addr, g.timeout, err)
	case f.typ == frameAbort:
		return fmt.Errorf("rendezvous: rank 0 refused rank %d: %s", g.Rank, f.data)
	case f.typ != framePay:
		return fmt.Errorf("rendezvous: rank 0 at %s sent frame %q, not the id", addr, f.typ)
	}
	conn.SetDeadline(time.Time{})
	g.Payload = f.data
	return nil
}

func readHello(conn net.Conn) (rank, world int, err error) {
	f, err := readFrame(conn)
	if err != nil {
		return 0, 0, err
	}
	if f.typ != frameHello || len(f.data) != 8 {
		return 0, 0, errors.New("not a hello")
	}
	return int(binary.BigEndian.Uint32(f.data[:4])), int(binary.BigEndian.Uint32(f.data[4:])), nil
}

func writeFrame(w io.Writer, typ byte, data []byte) error {
	b := make([]byte, 5+len(data))
	b[0] = typ
	binary.BigEndian.PutUint32(b[1:5], uint32(len(data)))
	copy(b[5:], data)
	_, err := w.Write(b)
	return err
}

func readFrame(r io.Reader) (frame, error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return frame{}, err
	}
	n := binary.BigEndian.Uint32(h[1:])
	if n > 1<<20 {
		return frame{}, fmt.Errorf("rendezvous frame of %d bytes", n)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(r, data); err != nil {
		return frame{}, err
	}
	return frame{typ: h[0], data: data}, nil
}
