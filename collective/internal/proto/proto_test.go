package proto

import (
	"strings"
	"testing"
)

func TestEncodeDecode(t *testing.T) {
	hs := []Header{
		{Kind: AllReduce, Dtype: 1, Op: 3, Len: 1 << 40, Seq: 7},
		{Kind: AllGather, Fault: BadRecvLen, Dtype: 2, Len: 5, RecvLen: 15, Counted: true, CountsHash: HashCounts([]int{1, 2, 3}), Seq: 1 << 62},
		{Kind: Broadcast, Dtype: 1, Root: 3, Len: 0},
		{Kind: Split, Root: -1, Key: -12345},
		{Kind: Barrier},
	}
	for _, h := range hs {
		var w [Words]int64
		h.Encode(&w)
		var g Header
		if !g.Decode(&w) {
			t.Fatalf("%+v: Decode failed", h)
		}
		if g != h {
			t.Errorf("round trip: got %+v, want %+v", g, h)
		}
	}
	var w [Words]int64
	var g Header
	if g.Decode(&w) {
		t.Error("Decode accepted zeros")
	}
}

func TestHashCounts(t *testing.T) {
	a, b := []int{3, 0, 5}, []int{3, 0, 5}
	if HashCounts([]int{1, 2}) == HashCounts([]int{2, 1}) || HashCounts([]int{0}) == HashCounts(nil) || HashCounts(a) != HashCounts(b) {
		t.Error("HashCounts does not tell counts apart")
	}
}

func TestAgree(t *testing.T) {
	ar := func(n, dtype, op int) Header { return Header{Kind: AllReduce, Dtype: dtype, Op: op, Len: n} }
	for _, tc := range []struct {
		hs      []Header
		details []string
		want    string
		fault   Fault
	}{
		{[]Header{ar(4, 1, 1), ar(4, 1, 1)}, nil, "", OK},
		{[]Header{ar(4, 1, 1), ar(5, 1, 1)}, nil, "rank 1 has 5 values, rank 0 has 4", OK},
		{[]Header{ar(4, 1, 1), ar(4, 2, 1)}, nil, "rank 1 has float64, rank 0 has float32", OK},
		{[]Header{ar(4, 1, 1), ar(4, 1, 2)}, nil, "rank 1 reduces with max, rank 0 with sum", OK},
		{[]Header{ar(4, 1, 1), {Kind: Barrier}}, nil, "rank 1 called barrier, rank 0 called all-reduce", OK},
		{[]Header{ar(4, 1, 1), {Kind: AllReduce, Fault: Unsupported}}, nil, "rank 1: unsupported buffer", Unsupported},
		{[]Header{ar(4, 1, 1), {Kind: AllReduce, Fault: BadOp}}, []string{"", "op 9"}, "rank 1: op 9", BadOp},
		{[]Header{ar(4, 1, 1), {Kind: AllReduce, Seq: 1}}, nil, "rank 1 is at call #1, rank 0 at call #0", OK},
		{[]Header{{Kind: Broadcast, Dtype: 1, Root: 0}, {Kind: Broadcast, Dtype: 1, Root: 1}}, nil, "rank 1 names root 1, rank 0 names root 0", OK},
		{[]Header{{Kind: AllGather, Dtype: 1, Len: 2}, {Kind: AllGather, Dtype: 1, Len: 3}}, nil, "rank 1 sends 3 values, rank 0 sends 2", OK},
		{[]Header{{Kind: AllGather, Dtype: 1, Counted: true, CountsHash: 1}, {Kind: AllGather, Dtype: 1, Counted: true, CountsHash: 2}}, nil, "different counts", OK},
		{[]Header{{Kind: AllGather, Dtype: 1, Counted: true}, {Kind: AllGather, Dtype: 1}}, nil, "counts=nil", OK},
		{[]Header{{Kind: Split, Root: 1}, {Kind: Split, Root: 2, Key: 5}}, nil, "", OK},
	} {
		got, f := Agree(tc.hs, tc.details)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) || f != tc.fault {
			t.Errorf("Agree(%+v) = %q, %v; want %q, %v", tc.hs, got, f, tc.want, tc.fault)
		}
	}
}

func TestChecks(t *testing.T) {
	h := Header{Len: 2, RecvLen: 6}
	if f, d := CheckAllGather(&h, nil, 0, 3); f != OK || h.Counted {
		t.Errorf("equal all-gather: %v %s", f, d)
	}
	h = Header{Len: 2, RecvLen: 5}
	if f, _ := CheckAllGather(&h, nil, 0, 3); f != BadRecvLen {
		t.Errorf("short recv: %v", f)
	}
	h = Header{Len: 0, RecvLen: 3}
	if f, d := CheckAllGather(&h, []int{1, 0, 2}, 1, 3); f != OK || !h.Counted || h.CountsHash != HashCounts([]int{1, 0, 2}) {
		t.Errorf("counted all-gather: %v %s", f, d)
	}
	for _, counts := range [][]int{{1, 2}, {1, -1, 2}} {
		h = Header{}
		if f, _ := CheckAllGather(&h, counts, 0, 3); f != BadCounts {
			t.Errorf("counts %v: %v", counts, f)
		}
	}
	h = Header{Len: 3, RecvLen: 1}
	if f, _ := CheckAllToAll(&h, []int{1, 2}, []int{0, 1}, 2); f != OK {
		t.Errorf("all-to-all: %v", f)
	}
	if f, _ := CheckAllToAll(&h, []int{1, 1}, []int{0, 1}, 2); f != BadSendLen {
		t.Errorf("all-to-all send length: %v", f)
	}
	if f, _ := CheckRoot(2, 2); f != BadRoot {
		t.Errorf("root: %v", f)
	}
	send := [][]int{{0, 1}, {2, 0}}
	recv := [][]int{{0, 2}, {1, 0}}
	get := func(m [][]int) func(int) []int { return func(r int) []int { return m[r] } }
	if msg := AgreeAllToAll(get(send), get(recv), 2); msg != "" {
		t.Errorf("AgreeAllToAll: %s", msg)
	}
	recv[1][0] = 3
	if msg := AgreeAllToAll(get(send), get(recv), 2); !strings.Contains(msg, "rank 0 sends 1 values to rank 1, which expects 3") {
		t.Errorf("AgreeAllToAll: %q", msg)
	}
}

func TestNames(t *testing.T) {
	if Kind(99).String() != "kind(99)" || Fault(99).String() != "fault(99)" || DtypeName(9) != "dtype(9)" || OpName(0) != "op(0)" {
		t.Error("names of invalid values")
	}
	for k := AllReduce; k <= Split; k++ {
		if strings.HasPrefix(k.String(), "kind(") {
			t.Errorf("kind %d has no name", k)
		}
	}
	for f := OK; f <= Overlap; f++ {
		if strings.HasPrefix(f.String(), "fault(") {
			t.Errorf("fault %d has no name", f)
		}
	}
}
