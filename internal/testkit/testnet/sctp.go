package testnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// SCTP without SCTP sockets: a kernel without SCTP support still tracks,
// NATs and routes SCTP packets, and raw IP sockets can send and read them.
// SendSCTPInit writes the first packet of an association (an INIT chunk);
// an SCTPReader in an endpoint's namespace reads what arrived, as the IP
// header and the SCTP common header show it after any DNAT. IPv4 only.

const (
	protoSCTP = 132
	chunkINIT = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// SCTPInit returns an SCTP packet (common header and one INIT chunk) from
// srcPort to dstPort, with its CRC32c checksum, as an SCTP stack would send
// to open an association: verification tag 0, the chunk's initiate tag
// nonzero.
func SCTPInit(srcPort, dstPort uint16) []byte {
	pkt := make([]byte, 12+20)
	binary.BigEndian.PutUint16(pkt[0:], srcPort)
	binary.BigEndian.PutUint16(pkt[2:], dstPort)
	// pkt[4:8] verification tag 0; pkt[8:12] checksum, below.
	init := pkt[12:]
	init[0] = chunkINIT
	binary.BigEndian.PutUint16(init[2:], 20)          // chunk length
	binary.BigEndian.PutUint32(init[4:], 0x5ec7a11d)  // initiate tag
	binary.BigEndian.PutUint32(init[8:], 65536)       // advertised receiver window
	binary.BigEndian.PutUint16(init[12:], 1)          // outbound streams
	binary.BigEndian.PutUint16(init[14:], 1)          // inbound streams
	binary.BigEndian.PutUint32(init[16:], 0x0badcafe) // initial TSN
	// The CRC32c of the packet with the checksum field zero, stored least
	// significant byte first, as the kernel's sctp_compute_cksum does.
	binary.LittleEndian.PutUint32(pkt[8:], crc32.Checksum(pkt, castagnoli))
	return pkt
}

// sctpChecksumOK reports whether an SCTP packet's CRC32c is right.
func sctpChecksumOK(pkt []byte) bool {
	if len(pkt) < 12 {
		return false
	}
	c := make([]byte, len(pkt))
	copy(c, pkt)
	want := binary.LittleEndian.Uint32(c[8:])
	binary.LittleEndian.PutUint32(c[8:], 0)
	return crc32.Checksum(c, castagnoli) == want
}

// SendSCTPInit sends an SCTP INIT from inside ns, from srcPort to dst, on a
// raw IPv4 socket: the kernel adds the IP header, with the source address
// its routes choose.
func (ns *NS) SendSCTPInit(srcPort uint16, dst netip.AddrPort) error {
	if !dst.Addr().Is4() {
		return fmt.Errorf("sctp %s: IPv4 only", dst)
	}
	return ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, protoSCTP)
		if err != nil {
			return fmt.Errorf("raw SCTP socket in %s: %w", ns, err)
		}
		defer unix.Close(fd)
		err = unix.Sendto(fd, SCTPInit(srcPort, dst.Port()), 0, &unix.SockaddrInet4{Addr: dst.Addr().As4()})
		if err != nil {
			return fmt.Errorf("sctp INIT from %s to %s: %w", ns, dst, err)
		}
		return nil
	})
}

// SCTPPacket is an SCTP packet as it arrived.
type SCTPPacket struct {
	Src, Dst netip.AddrPort
	// FirstChunk is the type of the first chunk (1: INIT).
	FirstChunk byte
	// ChecksumOK says the CRC32c matches the packet as it arrived (after
	// NAT rewrote its ports).
	ChecksumOK bool
}

// SCTPReader reads the SCTP packets that reach a namespace.
type SCTPReader struct {
	fd int
	ns *NS
}

// ReadSCTP opens a raw socket in ns that receives every SCTP packet
// delivered there. Close it when done.
func (ns *NS) ReadSCTP() (*SCTPReader, error) {
	r := &SCTPReader{ns: ns}
	err := ns.Do(func() error {
		var err error
		r.fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, protoSCTP)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("raw SCTP socket in %s: %w", ns, err)
	}
	return r, nil
}

// Next returns the next packet, waiting at most timeout.
func (r *SCTPReader) Next(timeout time.Duration) (SCTPPacket, error) {
	buf := make([]byte, 2048)
	for deadline := time.Now().Add(timeout); ; {
		left := time.Until(deadline)
		if left <= 0 {
			return SCTPPacket{}, fmt.Errorf("no SCTP packet reached %s in %v", r.ns, timeout)
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		if err := unix.SetsockoptTimeval(r.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return SCTPPacket{}, err
		}
		n, _, err := unix.Recvfrom(r.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return SCTPPacket{}, fmt.Errorf("reading SCTP in %s: %w", r.ns, err)
		}
		p, err := parseSCTP(buf[:n])
		if err != nil {
			return SCTPPacket{}, fmt.Errorf("in %s: %w", r.ns, err)
		}
		return p, nil
	}
}

// Close closes the socket.
func (r *SCTPReader) Close() error { return unix.Close(r.fd) }

// parseSCTP reads an IPv4 packet carrying SCTP, as a raw socket returns it.
func parseSCTP(b []byte) (SCTPPacket, error) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return SCTPPacket{}, fmt.Errorf("not an IPv4 packet: % x", b)
	}
	ihl := int(b[0]&0x0f) * 4
	if b[9] != protoSCTP || len(b) < ihl+16 {
		return SCTPPacket{}, fmt.Errorf("not an SCTP packet with a chunk: % x", b)
	}
	sctp := b[ihl:]
	src := netip.AddrFrom4([4]byte(b[12:16]))
	dst := netip.AddrFrom4([4]byte(b[16:20]))
	return SCTPPacket{
		Src:        netip.AddrPortFrom(src, binary.BigEndian.Uint16(sctp[0:])),
		Dst:        netip.AddrPortFrom(dst, binary.BigEndian.Uint16(sctp[2:])),
		FirstChunk: sctp[12],
		ChecksumOK: sctpChecksumOK(sctp),
	}, nil
}
