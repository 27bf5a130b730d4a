// Package proto describes one rank's side of a collective call, checks it
// locally, and checks that all ranks of a group agree before any data moves.
//
// Every backend of package collective builds a [Header] per call, exchanges
// the headers (the in-process backend reads them from shared memory, the MPI
// backend all-gathers their [Header.Encode] form), and calls [Agree]. All
// ranks run the same deterministic check on the same headers and therefore
// reach the same verdict, so a disagreement becomes an error on every rank
// instead of a hang or wrong numbers.
//
// The numeric values of Dtype and Op are those of collective.Dtype and
// collective.ReduceOp; this package only compares and prints them.
package proto

import (
	"fmt"
	"strconv"
)

// Kind identifies a collective operation.
type Kind uint8

// The collectives of a Communicator.
const (
	AllReduce Kind = iota + 1
	AllGather
	Broadcast
	AllToAll
	Barrier
	Split
)

var kindNames = [...]string{
	AllReduce: "all-reduce",
	AllGather: "all-gather",
	Broadcast: "broadcast",
	AllToAll:  "all-to-all",
	Barrier:   "barrier",
	Split:     "split",
}

// String returns the name of k, e.g. "all-reduce".
func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Fault is the reason a rank's own arguments are invalid. It travels in the
// header so that the other ranks can report it too.
type Fault uint8

// Faults found by local checks.
const (
	OK           Fault = iota
	BadDtype           // invalid dtype or zero Buffer
	BadRecvDtype       // recv's dtype differs from send's
	Unsupported        // e.g. device memory on a host backend
	BadOp              // unknown reduce op
	BadRoot            // root out of range
	BadCounts          // wrong number of counts, or a negative count
	BadSendLen         // send length does not match the counts
	BadRecvLen         // recv length does not match the counts
	TooLarge           // a count exceeds what the backend can address
	Overlap            // send and recv overlap
)

var faultNames = [...]string{
	OK:           "ok",
	BadDtype:     "invalid dtype",
	BadRecvDtype: "send and recv dtypes differ",
	Unsupported:  "unsupported buffer",
	BadOp:        "invalid reduce op",
	BadRoot:      "root out of range",
	BadCounts:    "invalid counts",
	BadSendLen:   "send length does not match counts",
	BadRecvLen:   "recv length does not match counts",
	TooLarge:     "count too large for the backend",
	Overlap:      "send and recv overlap",
}

// String describes f.
func (f Fault) String() string {
	if int(f) < len(faultNames) && faultNames[f] != "" {
		return faultNames[f]
	}
	return "fault(" + strconv.Itoa(int(f)) + ")"
}

// DtypeName returns the name of a collective.Dtype value.
func DtypeName(d int) string {
	switch d {
	case 1:
		return "float32"
	case 2:
		return "float64"
	}
	return "dtype(" + strconv.Itoa(d) + ")"
}

// OpName returns the name of a collective.ReduceOp value.
func OpName(op int) string {
	switch op {
	case 1:
		return "sum"
	case 2:
		return "max"
	case 3:
		return "min"
	}
	return "op(" + strconv.Itoa(op) + ")"
}

// Header is one rank's description of a collective call.
type Header struct {
	Kind  Kind
	Fault Fault // this rank's arguments are invalid (set by the local checks)
	Dtype int   // element type (collective.Dtype)
	Op    int   // reduce op (AllReduce)
	Root  int   // broadcast root, or split color
	Key   int   // split key
	Len   int   // len(buf) or len(send)
	// RecvLen is len(recv) (AllGather, AllToAll).
	RecvLen int
	// Counted reports an all-gather with explicit counts; CountsHash is
	// HashCounts of them.
	Counted    bool
	CountsHash uint64
	// Seq numbers the calls on a communicator, starting at 0.
	Seq uint64
}

// HashCounts returns the 64-bit FNV-1a hash of counts, used to compare
// all-gather counts between ranks without sending them.
func HashCounts(counts []int) uint64 {
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	for _, c := range counts {
		v := uint64(c)
		for i := 0; i < 8; i++ {
			h ^= v & 0xff
			h *= prime
			v >>= 8
		}
	}
	return h
}

// CheckCounts validates counts for a group of size ranks: size entries, none
// negative. It returns the sum.
func CheckCounts(counts []int, size int) (sum int, f Fault, detail string) {
	if len(counts) != size {
		return 0, BadCounts, fmt.Sprintf("%d counts for %d ranks", len(counts), size)
	}
	for r, c := range counts {
		if c < 0 {
			return 0, BadCounts, fmt.Sprintf("negative count %d for rank %d", c, r)
		}
		sum += c
	}
	return sum, OK, ""
}

// CheckAllGather validates the lengths of an all-gather on rank of size.
// counts may be nil (every rank sends h.Len values). It fills h.Counted and
// h.CountsHash.
func CheckAllGather(h *Header, counts []int, rank, size int) (Fault, string) {
	if counts == nil {
		h.Counted = false
		if want := size * h.Len; h.RecvLen != want {
			return BadRecvLen, fmt.Sprintf("recv length %d, want %d (%d ranks × %d)", h.RecvLen, want, size, h.Len)
		}
		return OK, ""
	}
	h.Counted = true
	h.CountsHash = HashCounts(counts)
	sum, f, d := CheckCounts(counts, size)
	if f != OK {
		return f, d
	}
	if h.Len != counts[rank] {
		return BadSendLen, fmt.Sprintf("send length %d, counts[%d] = %d", h.Len, rank, counts[rank])
	}
	if h.RecvLen != sum {
		return BadRecvLen, fmt.Sprintf("recv length %d, want sum(counts) = %d", h.RecvLen, sum)
	}
	return OK, ""
}

// CheckAllToAll validates the lengths of an all-to-all on a group of size.
func CheckAllToAll(h *Header, sendCounts, recvCounts []int, size int) (Fault, string) {
	ss, f, d := CheckCounts(sendCounts, size)
	if f != OK {
		return f, "send counts: " + d
	}
	rs, f, d := CheckCounts(recvCounts, size)
	if f != OK {
		return f, "recv counts: " + d
	}
	if h.Len != ss {
		return BadSendLen, fmt.Sprintf("send length %d, want sum(sendCounts) = %d", h.Len, ss)
	}
	if h.RecvLen != rs {
		return BadRecvLen, fmt.Sprintf("recv length %d, want sum(recvCounts) = %d", h.RecvLen, rs)
	}
	return OK, ""
}

// CheckOp validates an all-reduce's op for a buffer of dtype (the
// collective.Dtype code) and length n: ops 1–3 (sum, max, min) take any
// dtype, op 4 (moments) float64 triples.
func CheckOp(op, dtype, n int) (Fault, string) {
	switch {
	case op < 1 || op > 4:
		return BadOp, fmt.Sprintf("invalid reduce op %d", op)
	case op == 4 && dtype != 2:
		return BadOp, "the moments reduction needs a float64 buffer"
	case op == 4 && n%3 != 0:
		return BadOp, fmt.Sprintf("the moments reduction needs (n, mean, M2) triples: length %d is not a multiple of 3", n)
	}
	return OK, ""
}

// CheckRoot validates a broadcast root.
func CheckRoot(root, size int) (Fault, string) {
	if root < 0 || root >= size {
		return BadRoot, fmt.Sprintf("root %d not in [0, %d)", root, size)
	}
	return OK, ""
}

// Agree checks that the headers of all ranks (indexed by rank) describe the
// same collective with compatible arguments. It returns "" when they do, and
// otherwise a description of the first disagreement found, which is the
// same on every rank that checks the same headers.
//
// If a rank's own arguments are invalid, Agree also returns its Fault;
// details, if not nil, holds each rank's description of its fault, used in
// place of the Fault's generic text.
//
// The all-to-all counts are not in the header: see [AgreeAllToAll].
func Agree(hs []Header, details []string) (string, Fault) {
	h0 := &hs[0]
	for r := range hs {
		if hs[r].Kind != h0.Kind {
			return fmt.Sprintf("rank %d called %s, rank 0 called %s", r, hs[r].Kind, h0.Kind), OK
		}
	}
	for r := range hs {
		if hs[r].Seq != h0.Seq {
			return fmt.Sprintf("rank %d is at call #%d, rank 0 at call #%d", r, hs[r].Seq, h0.Seq), OK
		}
	}
	for r := range hs {
		if f := hs[r].Fault; f != OK {
			d := f.String()
			if details != nil && details[r] != "" {
				d = details[r]
			}
			return fmt.Sprintf("rank %d: %s", r, d), f
		}
	}
	return agreeArgs(hs), OK
}

func agreeArgs(hs []Header) string {
	h0 := &hs[0]
	k := h0.Kind
	if k == Barrier || k == Split {
		return ""
	}
	for r := range hs {
		h := &hs[r]
		if h.Dtype != h0.Dtype {
			return fmt.Sprintf("rank %d has %s, rank 0 has %s", r, DtypeName(h.Dtype), DtypeName(h0.Dtype))
		}
		switch k {
		case AllReduce:
			if h.Op != h0.Op {
				return fmt.Sprintf("rank %d reduces with %s, rank 0 with %s", r, OpName(h.Op), OpName(h0.Op))
			}
			if h.Len != h0.Len {
				return fmt.Sprintf("rank %d has %d values, rank 0 has %d", r, h.Len, h0.Len)
			}
		case Broadcast:
			if h.Root != h0.Root {
				return fmt.Sprintf("rank %d names root %d, rank 0 names root %d", r, h.Root, h0.Root)
			}
			if h.Len != h0.Len {
				return fmt.Sprintf("rank %d has %d values, rank 0 has %d", r, h.Len, h0.Len)
			}
		case AllGather:
			if h.Counted != h0.Counted {
				return fmt.Sprintf("rank %d passes counts=%s, rank 0 counts=%s", r, nilness(h.Counted), nilness(h0.Counted))
			}
			if !h.Counted && h.Len != h0.Len {
				return fmt.Sprintf("rank %d sends %d values, rank 0 sends %d (pass counts for uneven all-gathers)", r, h.Len, h0.Len)
			}
			if h.Counted && h.CountsHash != h0.CountsHash {
				return fmt.Sprintf("rank %d and rank 0 pass different counts", r)
			}
		}
	}
	return ""
}

func nilness(counted bool) string {
	if counted {
		return "non-nil"
	}
	return "nil"
}

// AgreeAllToAll checks that what every rank sends to every other rank is
// what that rank expects: send[r][s] == recv[s][r], where send[r] and
// recv[r] are rank r's sendCounts and recvCounts (already validated with
// CheckAllToAll).
func AgreeAllToAll(send, recv func(r int) []int, size int) string {
	for r := 0; r < size; r++ {
		sr := send(r)
		for s := 0; s < size; s++ {
			if got, want := sr[s], recv(s)[r]; got != want {
				return fmt.Sprintf("rank %d sends %d values to rank %d, which expects %d", r, got, s, want)
			}
		}
	}
	return ""
}

// Words is the length of a header's wire form.
const Words = 8

const magic = 0x62_6e_63 // "bnc"

// Encode writes h to w in a fixed-size form that ranks can exchange before
// they know whether they agree on anything else.
func (h *Header) Encode(w *[Words]int64) {
	var counted int64
	if h.Counted {
		counted = 1
	}
	w[0] = magic<<40 | counted<<32 | int64(h.Op&0xff)<<24 | int64(h.Dtype&0xff)<<16 | int64(h.Fault)<<8 | int64(h.Kind)
	w[1] = int64(h.Len)
	w[2] = int64(h.RecvLen)
	w[3] = int64(h.Root)
	w[4] = int64(h.Key)
	w[5] = int64(h.CountsHash)
	w[6] = int64(h.Seq)
	w[7] = 0
}

// Decode reads a header written by Encode. It reports false if w was not
// written by Encode (a rank running a different protocol).
func (h *Header) Decode(w *[Words]int64) bool {
	if w[0]>>40 != magic {
		return false
	}
	*h = Header{
		Kind:       Kind(w[0] & 0xff),
		Fault:      Fault(w[0] >> 8 & 0xff),
		Dtype:      int(w[0] >> 16 & 0xff),
		Op:         int(w[0] >> 24 & 0xff),
		Counted:    w[0]>>32&1 == 1,
		Len:        int(w[1]),
		RecvLen:    int(w[2]),
		Root:       int(w[3]),
		Key:        int(w[4]),
		CountsHash: uint64(w[5]),
		Seq:        uint64(w[6]),
	}
	return true
}
