#!/usr/bin/env bash
# setup_ssh_leader.sh -- passwordless SSH from this node (the "leader", where
# you type `mpirun`) to the member nodes of a multi-node run, with the stock
# OpenSSH tools: ssh-keygen, ssh-copy-id, ssh (and sshpass only if you hand a
# password over through the environment).
#
#   ./setup_ssh_leader.sh node01 node02 alice@node03 node04:2222
#   ./setup_ssh_leader.sh --hostfile hostfile          # the hosts of an MPI hostfile
#   ./setup_ssh_leader.sh --members members.txt        # one [user@]host[:port] a line
#   ./setup_ssh_leader.sh --dry-run --hostfile hostfile
#
# For every member it
#   1. uses your existing key (~/.ssh/id_ed25519, id_ecdsa or id_rsa), or
#      generates ~/.ssh/id_ed25519 when you have none;
#   2. appends a marked `Host` block to ~/.ssh/config (User/Port/IdentityFile,
#      so that mpirun's plain `ssh HOST` works), only when the file has no
#      `Host` entry for that host yet; existing entries are never edited;
#   3. tries to log in with the key (BatchMode); if that already works it
#      changes nothing on the member;
#   4. otherwise installs the public key with ssh-copy-id, authenticating the
#      first contact by ONE of
#        --bootstrap-identity FILE   a key the member already accepts, or
#        SSHPASS in the environment (passed on with `sshpass -e`), or
#        ssh-copy-id's own password prompt (interactive terminals only);
#   5. checks the login again.
# Host keys of the members are accepted on first contact only
# (-o StrictHostKeyChecking=accept-new on these commands, nothing global); a
# changed host key still fails. Passwords are never written to any file or
# printed. Running it twice is harmless: the second run changes nothing.
#
# Exit status: 0 all members reachable, 1 some member failed, 2 usage error.
set -euo pipefail

PROG=${0##*/}
MARK="setup_ssh_leader.sh"

usage() {
  cat <<EOF
Usage: $PROG [options] [MEMBER ...]
  MEMBER                     [user@]host[:port] of a member node
  -f, --members FILE         read members from FILE, one [user@]host[:port] a
                             line ('#' starts a comment)
  --hostfile FILE            read member hosts from an MPI hostfile
                             (MPICH 'host:slots' or Open MPI 'host slots=N')
  -l, --user USER            login user for members that do not name one
  -p, --port PORT            SSH port for members that do not name one
  -k, --key FILE             private key to use (generated if missing);
                             default: the first of ~/.ssh/id_ed25519,
                             id_ecdsa, id_rsa, else a new ~/.ssh/id_ed25519
  -b, --bootstrap-identity FILE
                             existing key the members already accept, used only
                             for the first contact (instead of a password)
  --no-config                do not append Host blocks to ~/.ssh/config
  -n, --dry-run              print what would be done; change and contact nothing
  -h, --help                 this help
Environment:
  SSHPASS    password for the first contact, handed to ssh-copy-id through
             'sshpass -e' (never written anywhere, never printed)
  HOME       all files live in \$HOME/.ssh
EOF
}

say() { printf '[%s] %s\n' "$PROG" "$*"; }
warn() { printf '[%s] warning: %s\n' "$PROG" "$*" >&2; }
usage_error() { printf '%s: %s\n(see %s --help)\n' "$PROG" "$*" "$PROG" >&2; exit 2; }

DRY_RUN=0
WRITE_CONFIG=1
KEY=""
BOOTSTRAP=""
DEFAULT_USER=""
DEFAULT_PORT=""
MEMBERS=()

# Members file: one [user@]host[:port] a line; MPI hostfile: the host field.
read_members() {  # FILE
  local line
  [ -r "$1" ] || usage_error "cannot read $1"
  while IFS= read -r line || [ -n "$line" ]; do
    line=${line%%#*}
    read -r line _ <<<"$line" || true
    [ -n "$line" ] && MEMBERS+=("$line")
  done <"$1"
}

read_hostfile() {  # FILE
  local line host
  [ -r "$1" ] || usage_error "cannot read $1"
  while IFS= read -r line || [ -n "$line" ]; do
    line=${line%%#*}
    read -r host _ <<<"$line" || true
    host=${host%%:*}
    [ -n "$host" ] && MEMBERS+=("$host")
  done <"$1"
}

while [ $# -gt 0 ]; do
  case $1 in
    -f|--members) [ $# -ge 2 ] || usage_error "$1 needs a file"; read_members "$2"; shift 2 ;;
    --hostfile) [ $# -ge 2 ] || usage_error "$1 needs a file"; read_hostfile "$2"; shift 2 ;;
    -l|--user) [ $# -ge 2 ] || usage_error "$1 needs a user"; DEFAULT_USER=$2; shift 2 ;;
    -p|--port) [ $# -ge 2 ] || usage_error "$1 needs a port"; DEFAULT_PORT=$2; shift 2 ;;
    -k|--key) [ $# -ge 2 ] || usage_error "$1 needs a file"; KEY=$2; shift 2 ;;
    -b|--bootstrap-identity) [ $# -ge 2 ] || usage_error "$1 needs a file"; BOOTSTRAP=$2; shift 2 ;;
    --no-config) WRITE_CONFIG=0; shift ;;
    -n|--dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; MEMBERS+=("$@"); break ;;
    -*) usage_error "unknown option $1" ;;
    *) MEMBERS+=("$1"); shift ;;
  esac
done

[ ${#MEMBERS[@]} -gt 0 ] || usage_error "no member nodes given"
: "${HOME:?HOME must be set}"
for tool in ssh ssh-keygen ssh-copy-id; do
  command -v "$tool" >/dev/null || usage_error "$tool not found (Debian/Ubuntu: apt-get install openssh-client)"
done
if [ -n "$BOOTSTRAP" ] && [ ! -r "$BOOTSTRAP" ]; then
  usage_error "bootstrap identity $BOOTSTRAP is not readable"
fi
USE_SSHPASS=0
if [ -z "$BOOTSTRAP" ] && [ -n "${SSHPASS:-}" ]; then
  USE_SSHPASS=1
  if ! command -v sshpass >/dev/null; then
    if [ "$DRY_RUN" -eq 1 ]; then
      warn "SSHPASS is set but sshpass is not installed (apt-get install sshpass)"
    else
      usage_error "SSHPASS is set but sshpass is not installed (apt-get install sshpass)"
    fi
  fi
fi

SSH_DIR="$HOME/.ssh"
CONFIG="$SSH_DIR/config"
KNOWN_HOSTS="$SSH_DIR/known_hosts"
if [ -z "$KEY" ]; then
  KEY="$SSH_DIR/id_ed25519"
  for k in id_ed25519 id_ecdsa id_rsa; do
    if [ -f "$SSH_DIR/$k" ] && [ -f "$SSH_DIR/$k.pub" ]; then KEY="$SSH_DIR/$k"; break; fi
  done
fi

# Print a command (shell-quoted), then run it unless this is a dry run.
run() {
  if [ "$DRY_RUN" -eq 1 ]; then printf 'would run:'; else printf '+'; fi
  printf ' %q' "$@"
  printf '\n'
  [ "$DRY_RUN" -eq 1 ] || "$@"
}

[ "$DRY_RUN" -eq 1 ] && say "dry run: nothing is changed and no member is contacted"

# 1. the leader's key
if [ ! -d "$SSH_DIR" ]; then
  run mkdir -m 700 -p "$SSH_DIR"
fi
if [ -f "$KEY" ]; then
  [ -f "$KEY.pub" ] || run sh -c 'ssh-keygen -y -f "$1" > "$1.pub"' sh "$KEY"
  say "using existing key $KEY"
else
  [ ! -e "$KEY.pub" ] || usage_error "$KEY.pub exists without its private key $KEY"
  run ssh-keygen -q -t ed25519 -N "" -C "$(id -un)@${HOSTNAME:-$(uname -n)} mpi leader" -f "$KEY"
fi

# OpenSSH finds ~/.ssh/config through the passwd entry, not $HOME; when the two
# differ, point it at $HOME's config so this script and its checks agree.
PW_HOME=$(getent passwd "$(id -u)" | cut -d: -f6 || true)
F_CONFIG=0
[ "${PW_HOME%/}" = "${HOME%/}" ] || F_CONFIG=1

# has_host_entry HOST: does ~/.ssh/config already have a `Host` line naming HOST?
has_host_entry() {
  [ -f "$CONFIG" ] || return 1
  awk -v h="$1" 'tolower($1) == "host" { for (i = 2; i <= NF; i++) if ($i == h) found = 1 }
                 END { exit !found }' "$CONFIG"
}

append_host_block() {  # HOST USER PORT
  local host=$1 user=$2 port=$3
  if has_host_entry "$host"; then
    say "$host: ~/.ssh/config already has a Host entry for it, left as is"
    return 0
  fi
  local block
  block="# >>> $MARK: Host $host >>>"$'\n'"Host $host"$'\n'"    HostName $host"$'\n'
  [ -z "$user" ] || block+="    User $user"$'\n'
  [ -z "$port" ] || block+="    Port $port"$'\n'
  block+="    IdentityFile \"$KEY\""$'\n'"# <<< $MARK: Host $host <<<"
  if [ "$DRY_RUN" -eq 1 ]; then
    printf 'would append to %s:\n%s\n' "$CONFIG" "$block"
    return 0
  fi
  # append, never overwrite; keep a blank line between blocks
  (
    umask 077
    if [ -s "$CONFIG" ] && [ -n "$(tail -c 1 "$CONFIG")" ]; then echo >>"$CONFIG"; fi
    printf '%s\n' "$block" >>"$CONFIG"
  )
  say "$host: appended a Host block to $CONFIG"
}

failed=0
for spec in "${MEMBERS[@]}"; do
  user=$DEFAULT_USER
  port=$DEFAULT_PORT
  hostport=$spec
  if [[ $spec == *@* ]]; then user=${spec%@*}; hostport=${spec##*@}; fi
  host=$hostport
  if [[ $hostport == *:* ]]; then host=${hostport%:*}; port=${hostport##*:}; fi
  if [[ ! $host =~ ^[A-Za-z0-9._-]+$ ]] || [[ -n $user && ! $user =~ ^[A-Za-z0-9._][A-Za-z0-9._-]*$ ]] \
     || [[ -n $port && ! $port =~ ^[0-9]+$ ]]; then
    warn "$spec: not of the form [user@]host[:port], skipped"
    failed=1
    continue
  fi

  [ "$WRITE_CONFIG" -eq 0 ] || append_host_block "$host" "$user" "$port"

  opts=(-o StrictHostKeyChecking=accept-new -o "UserKnownHostsFile=$KNOWN_HOSTS" -o ConnectTimeout=10)
  if [ "$F_CONFIG" -eq 1 ]; then
    if [ -f "$CONFIG" ] || [ "$DRY_RUN" -eq 1 ]; then opts=(-F "$CONFIG" "${opts[@]}"); else opts=(-F /dev/null "${opts[@]}"); fi
  fi
  [ -z "$port" ] || opts+=(-p "$port")
  dest=$host
  [ -z "$user" ] || dest="$user@$host"
  check=(ssh "${opts[@]}" -o BatchMode=yes -o ControlMaster=no -o ControlPath=none
         -o IdentitiesOnly=yes -i "$KEY" "$dest" true)
  install=(ssh-copy-id -f -i "$KEY.pub" "${opts[@]}")
  if [ -n "$BOOTSTRAP" ]; then
    install+=(-o "IdentityFile=$BOOTSTRAP" -o IdentitiesOnly=yes -o BatchMode=yes)
  fi
  install+=("$dest")
  [ "$USE_SSHPASS" -eq 0 ] || install=(sshpass -e "${install[@]}")

  if [ "$DRY_RUN" -eq 1 ]; then
    say "$spec: would check the key login, and only if it fails install the key:"
    run "${check[@]}"
    run "${install[@]}"
    continue
  fi
  if "${check[@]}" </dev/null >/dev/null 2>&1; then
    say "$spec: key login already works, nothing to do"
    continue
  fi
  say "$spec: installing $KEY.pub"
  # (ssh-copy-id's password prompt, if any, reads the terminal, not stdin)
  if run "${install[@]}" </dev/null && "${check[@]}" </dev/null >/dev/null 2>&1; then
    say "$spec: ok, key login works"
  else
    warn "$spec: FAILED (check the host, the first-contact credentials, and the member's sshd)"
    failed=1
  fi
done
exit "$failed"
