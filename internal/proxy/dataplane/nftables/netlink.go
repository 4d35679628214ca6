package nftables

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	gnft "github.com/google/nftables"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// elementWriter sends a transaction made only of element deletions and
// additions in the shared endpoint maps and the hairpin set straight to the
// kernel over netlink, as one atomic batch. That is what an endpoint change
// is, and the nft binary would spend 15-30 ms starting and loading its
// cache of a 10,000-Service table for it; netlink takes well under one.
// Anything else goes through nft.
type elementWriter struct {
	table  string
	family gnft.TableFamily
	sent   int // batches the kernel took, for tests to see that netlink was used
}

func newElementWriter(table string, f plan.Family) *elementWriter {
	tf := gnft.TableFamilyIPv4
	if f == plan.IPv6 {
		tf = gnft.TableFamilyIPv6
	}
	return &elementWriter{table: table, family: tf}
}

// encoders for the containers the writer handles: key and value fields in
// order. Other containers are not eligible.
var elementLayouts = map[string]layout{setHairpin: {[]field{fAddr, fAddr}, nil}}

type layout struct{ key, value []field }

func init() {
	for _, m := range endpointMapList {
		l := layout{[]field{fAddr, fPort, fIndex}, []field{fAddr, fPort}}
		if m.byPort {
			l.key = []field{fPort, fIndex}
		}
		for gen := 0; gen < 2; gen++ {
			elementLayouts[m.name(gen)] = l
		}
	}
}

// eligible reports whether the writer can send all of these elements.
func (w *elementWriter) eligible(elems ...[]elemDef) bool {
	for _, list := range elems {
		for _, e := range list {
			if _, ok := elementLayouts[e.into]; !ok || e.comment != nil {
				return false
			}
		}
	}
	return true
}

// write sends the deletions, then the additions, in one batch.
func (w *elementWriter) write(dels, adds []elemDef) error {
	conn, err := gnft.New()
	if err != nil {
		return err
	}
	for _, op := range []struct {
		elems []elemDef
		apply func(*gnft.Set, []gnft.SetElement) error
	}{{dels, conn.SetDeleteElements}, {adds, conn.SetAddElements}} {
		for _, e := range op.elems {
			el, err := encodeElement(e)
			if err != nil {
				return err
			}
			set := &gnft.Set{Table: &gnft.Table{Name: w.table, Family: w.family}, Name: e.into, IsMap: e.isMap}
			if err := op.apply(set, []gnft.SetElement{el}); err != nil {
				return err
			}
		}
	}
	if err := conn.Flush(); err != nil {
		return err
	}
	w.sent++
	return nil
}

// writeAll adds the elements of many groups into maps nothing refers to
// yet, so atomicity across batches does not matter: up to 512 elements a
// message (a netlink attribute holds at most 64 KiB) and 2048 a batch (a
// send is bounded by the socket buffer). Groups are expanded as they go.
func (w *elementWriter) writeAll(groups []elemDef) error {
	const perMessage, perBatch = 512, 2048
	b := &batcher{w: w, perMessage: perMessage, perBatch: perBatch}
	for _, g := range groups {
		for i := range max(len(g.group), 1) {
			e := g
			if g.group != nil {
				e = g.member(i)
			}
			if err := b.add(e); err != nil {
				return err
			}
		}
	}
	return b.flush()
}

// batcher collects elements into netlink messages (one per map) and
// batches, sending each batch when it is full.
type batcher struct {
	w                    *elementWriter
	perMessage, perBatch int
	conn                 *gnft.Conn
	set                  string
	isMap                bool
	pending              []gnft.SetElement
	inBatch              int
}

func (b *batcher) add(e elemDef) error {
	if b.set != e.into || len(b.pending) == b.perMessage {
		if err := b.endMessage(); err != nil {
			return err
		}
		b.set, b.isMap = e.into, e.isMap
	}
	el, err := encodeElement(e)
	if err != nil {
		return err
	}
	b.pending = append(b.pending, el)
	if b.inBatch++; b.inBatch == b.perBatch {
		return b.flush()
	}
	return nil
}

func (b *batcher) endMessage() error {
	if len(b.pending) == 0 {
		return nil
	}
	if b.conn == nil {
		conn, err := gnft.New()
		if err != nil {
			return err
		}
		b.conn = conn
	}
	set := &gnft.Set{Table: &gnft.Table{Name: b.w.table, Family: b.w.family}, Name: b.set, IsMap: b.isMap}
	err := b.conn.SetAddElements(set, b.pending)
	b.pending = nil
	return err
}

func (b *batcher) flush() error {
	if err := b.endMessage(); err != nil {
		return err
	}
	if b.conn == nil {
		return nil
	}
	err := b.conn.Flush()
	b.conn, b.inBatch = nil, 0
	if err != nil {
		return fmt.Errorf("adding endpoint elements: %w", err)
	}
	b.w.sent++
	return nil
}

// field is one part of a concatenated key or value. In the kernel each
// part takes a multiple of 4 bytes.
type field func(s string) ([]byte, error)

func fAddr(s string) ([]byte, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return nil, err
	}
	return a.AsSlice(), nil
}

func fPort(s string) ([]byte, error) {
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return nil, err
	}
	return []byte{byte(p >> 8), byte(p), 0, 0}, nil // network order, padded
}

// fIndex is a numgen value: a 32-bit integer in host byte order.
func fIndex(s string) ([]byte, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return nil, err
	}
	return binary.NativeEndian.AppendUint32(nil, uint32(n)), nil
}

func encodeElement(e elemDef) (gnft.SetElement, error) {
	layout := elementLayouts[e.into]
	key, err := encodeFields(e.key, layout.key)
	if err != nil {
		return gnft.SetElement{}, fmt.Errorf("%s element %q: %w", e.into, e.key, err)
	}
	el := gnft.SetElement{Key: key}
	if e.isMap {
		if el.Val, err = encodeFields(e.value, layout.value); err != nil {
			return gnft.SetElement{}, fmt.Errorf("%s element %q value %q: %w", e.into, e.key, e.value, err)
		}
	}
	return el, nil
}

func encodeFields(joined string, fields []field) ([]byte, error) {
	parts := strings.Split(joined, " . ")
	if len(parts) != len(fields) {
		return nil, fmt.Errorf("%d fields, want %d", len(parts), len(fields))
	}
	var out []byte
	for i, f := range fields {
		b, err := f(parts[i])
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
	}
	return out, nil
}
