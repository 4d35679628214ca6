package nftables

import (
	"math/bits"
	"net/netip"
)

// The kernel's nft "jhash" expression, so that the tracer can say which
// endpoint a source gets under the sh scheduler: Bob Jenkins' lookup3 hash
// (Linux's jhash()) of the packet bytes, with the rule's seed, scaled to
// the modulus by multiplying (reciprocal_scale), not by a remainder.

// jhashInit is lookup3's initial value, added to the length and the seed.
const jhashInit = 0xdeadbeef

// jhash hashes key with seed as the kernel's jhash() does on a
// little-endian machine (whole words are loaded in CPU order, the tail
// byte by byte, lowest first).
func jhash(key []byte, seed uint32) uint32 {
	a := jhashInit + uint32(len(key)) + seed
	b, c := a, a
	for len(key) > 12 {
		a += le32(key[0:4])
		b += le32(key[4:8])
		c += le32(key[8:12])
		a, b, c = jhashMix(a, b, c)
		key = key[12:]
	}
	if len(key) == 0 {
		return c
	}
	var tail [12]byte
	copy(tail[:], key)
	a += le32(tail[0:4])
	b += le32(tail[4:8])
	c += le32(tail[8:12])
	return jhashFinal(a, b, c)
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// jhashMix stirs three words together (lookup3's mix).
func jhashMix(a, b, c uint32) (uint32, uint32, uint32) {
	a -= c
	a ^= bits.RotateLeft32(c, 4)
	c += b
	b -= a
	b ^= bits.RotateLeft32(a, 6)
	a += c
	c -= b
	c ^= bits.RotateLeft32(b, 8)
	b += a
	a -= c
	a ^= bits.RotateLeft32(c, 16)
	c += b
	b -= a
	b ^= bits.RotateLeft32(a, 19)
	a += c
	c -= b
	c ^= bits.RotateLeft32(b, 4)
	b += a
	return a, b, c
}

// jhashFinal mixes the last words into c (lookup3's final).
func jhashFinal(a, b, c uint32) uint32 {
	c ^= b
	c -= bits.RotateLeft32(b, 14)
	a ^= c
	a -= bits.RotateLeft32(c, 11)
	b ^= a
	b -= bits.RotateLeft32(a, 25)
	c ^= b
	c -= bits.RotateLeft32(b, 16)
	a ^= c
	a -= bits.RotateLeft32(c, 4)
	b ^= a
	b -= bits.RotateLeft32(a, 14)
	c ^= b
	c -= bits.RotateLeft32(b, 24)
	return c
}

// sourceHashIndex is the index "jhash ip saddr mod n seed seed" gives a
// packet from src.
func sourceHashIndex(src netip.Addr, n int, seed uint32) int {
	key := src.AsSlice()
	return int(uint64(jhash(key, seed)) * uint64(n) >> 32)
}
