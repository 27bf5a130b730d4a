#!/usr/bin/env bash
# hosts.sh — simulated hosts on this machine for multi-host MPI tests.
#
# Each host is a network namespace with its own hostname (the commands run
# under unshare --uts), one veth pair into one bridge, and one address in a
# private test subnet; nothing else of the machine's network is touched and
# only the addresses of these namespaces are ever used. Needs root,
# iproute2 and util-linux (unshare).
#
#   hosts.sh up N            create hosts mh0 … mh(N-1) (removes leftovers first)
#   hosts.sh down            remove every host, the bridge and their processes
#   hosts.sh exec HOST CMD…  run CMD on HOST (its namespace and hostname)
#   hosts.sh rsh [-opts] HOST CMD…   the same, as Open MPI's rsh agent
#                            (plm_rsh_agent): CMD is one shell string, as ssh runs it
#   hosts.sh pids HOST [NAME]  pids of the processes on HOST (named NAME)
#   hosts.sh addr HOST       HOST's address
#   hosts.sh cut HOST | heal HOST        take HOST's link down / up
#   hosts.sh slow HOST RATE | fast HOST  rate-limit HOST's link both ways (tc tbf)
#
# Names: everything it creates starts with $BNMH_PREFIX (default bnmh):
# namespaces bnmh-mh0…, bridge bnmh-br, host-side veths bnmh-mh0…; so
# "down" (and "up") also remove what an interrupted earlier run left. The
# subnet is $BNMH_NET (default 10.213.77): hosts get .11, .12, …; "up"
# refuses to run if the machine already routes that subnet.
#
# Source it (". hosts.sh") for the functions, or run it as a command.
set -u
BNMH_PREFIX=${BNMH_PREFIX:-bnmh}
BNMH_NET=${BNMH_NET:-10.213.77}
BNMH_SELF=$(readlink -f "${BASH_SOURCE[0]}")

hosts_ns() { echo "$BNMH_PREFIX-$1"; }
hosts_addr() { echo "$BNMH_NET.$((11 + ${1#mh}))"; }
hosts_list() { ip netns list 2>/dev/null | awk -v p="$BNMH_PREFIX-" 'index($1, p) == 1 { print substr($1, length(p) + 1) }'; }

# hosts_pids HOST [NAME]: the processes in HOST's namespace (named NAME:
# /proc/PID/comm, at most 15 characters).
hosts_pids() {
	local p
	for p in $(ip netns pids "$(hosts_ns "$1")" 2>/dev/null); do
		if [[ -z ${2:-} ]] || [[ $(cat "/proc/$p/comm" 2>/dev/null || true) == "$2" ]]; then
			echo "$p"
		fi
	done
}

# hosts_down: SIGKILL every process in our namespaces (mpirun, orted, the
# ranks; stopped ones too), then delete the namespaces, veths and bridge.
hosts_down() {
	local h ns i left
	for i in 1 2 3 4 5; do
		left=0
		for h in $(hosts_list); do
			for p in $(ip netns pids "$(hosts_ns "$h")" 2>/dev/null); do
				kill -KILL "$p" 2>/dev/null || true
				left=1
			done
		done
		((left == 0)) && break
		sleep 0.2
	done
	for h in $(hosts_list); do
		ns=$(hosts_ns "$h")
		ip link del "$ns" 2>/dev/null || true
		ip netns del "$ns" 2>/dev/null || true
	done
	ip link del "$BNMH_PREFIX-br" 2>/dev/null || true
	# Host-side veths whose namespace is already gone.
	for i in $(ip -o link show 2>/dev/null | awk -F': ' -v p="$BNMH_PREFIX-" '{ sub(/@.*/, "", $2) } index($2, p) == 1 { print $2 }'); do
		ip link del "$i" 2>/dev/null || true
	done
	return 0
}

# hosts_up N: hosts mh0 … mh(N-1) on one bridge.
hosts_up() {
	local n=$1 k h ns v
	hosts_down
	if ip -4 route show | grep -q "^$BNMH_NET\."; then
		echo "hosts.sh: the machine already routes $BNMH_NET.0/24; set BNMH_NET" >&2
		return 1
	fi
	ip link add "$BNMH_PREFIX-br" type bridge stp_state 0 forward_delay 0 || return 1
	ip link set "$BNMH_PREFIX-br" up
	for ((k = 0; k < n; k++)); do
		h=mh$k ns=$(hosts_ns mh$k) v=$BNMH_PREFIX-mh$k
		ip netns add "$ns" || return 1
		ip link add "$v" type veth peer name eth0 netns "$ns" || return 1
		ip link set "$v" master "$BNMH_PREFIX-br"
		ip link set "$v" up
		ip -n "$ns" link set lo up
		ip -n "$ns" addr add "$(hosts_addr $h)/24" dev eth0
		ip -n "$ns" link set eth0 up
	done
}

# hosts_exec HOST CMD…: run CMD on HOST with hostname HOST.
hosts_exec() {
	local h=$1
	shift
	exec ip netns exec "$(hosts_ns "$h")" unshare --uts sh -c 'hostname "$0" && exec "$@"' "$h" "$@"
}

# hosts_rsh [-opts] HOST CMD…: Open MPI's rsh agent. Like ssh it joins the
# command words into one shell command line.
hosts_rsh() {
	while [[ ${1:-} == -* ]]; do shift; done
	local h=$1
	shift
	exec ip netns exec "$(hosts_ns "$h")" unshare --uts sh -c 'hostname "$0" && eval "$1"' "$h" "$*"
}

# hosts_cut / hosts_heal HOST: HOST's cable out / in (its bridge port; the
# host itself sees nothing, packets are dropped).
hosts_cut() { ip link set "$BNMH_PREFIX-$1" down; }
hosts_heal() { ip link set "$BNMH_PREFIX-$1" up; }

# hosts_slow HOST RATE: token-bucket limit both ways on HOST's link (e.g.
# 20mbit); hosts_fast HOST removes it.
hosts_slow() {
	tc qdisc replace dev "$BNMH_PREFIX-$1" root tbf rate "$2" burst 32kb latency 400ms &&
		ip netns exec "$(hosts_ns "$1")" tc qdisc replace dev eth0 root tbf rate "$2" burst 32kb latency 400ms
}
hosts_fast() {
	tc qdisc del dev "$BNMH_PREFIX-$1" root 2>/dev/null || true
	ip netns exec "$(hosts_ns "$1")" tc qdisc del dev eth0 root 2>/dev/null || true
	return 0
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	cmd=${1:-}
	shift || true
	case $cmd in
	up) hosts_up "$@" ;;
	down) hosts_down ;;
	exec) hosts_exec "$@" ;;
	rsh) hosts_rsh "$@" ;;
	pids) hosts_pids "$@" ;;
	addr) hosts_addr "$@" ;;
	list) hosts_list ;;
	cut) hosts_cut "$@" ;;
	heal) hosts_heal "$@" ;;
	slow) hosts_slow "$@" ;;
	fast) hosts_fast "$@" ;;
	*)
		sed -n '2,/^set -u/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
		exit 2
		;;
	esac
fi
