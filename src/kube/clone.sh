#!/bin/sh
# The runner pod's init container: prepares WORKDIR and clones REPO_URL (at REPO_REF) into it.
# Inputs come from the environment only, never from the script text, so a URL or ref cannot
# inject shell. Credentials from the optional git auth Secret (mounted at AUTH) are written to
# this container's own HOME (a volume the runner container never mounts).
set -eu
umask 077
mkdir -p "$WORKDIR"
find "$WORKDIR" -mindepth 1 -delete
if [ -d "$AUTH" ]; then
  if [ -f "$AUTH/.netrc" ]; then
    cp "$AUTH/.netrc" "$HOME/.netrc"
  elif [ -f "$AUTH/token" ]; then
    host=$(printf '%s\n' "$REPO_URL" | sed -n 's#^[a-z]*://\([^/:@]*\).*#\1#p')
    user=oauth2
    [ -f "$AUTH/username" ] && user=$(cat "$AUTH/username")
    printf 'machine %s login %s password %s\n' "$host" "$user" "$(cat "$AUTH/token")" > "$HOME/.netrc"
  fi
  if [ -f "$AUTH/ssh-privatekey" ]; then
    mkdir -p "$HOME/.ssh"
    cp "$AUTH/ssh-privatekey" "$HOME/.ssh/id_key"
    if [ -f "$AUTH/known_hosts" ]; then
      cp "$AUTH/known_hosts" "$HOME/.ssh/known_hosts"
      export GIT_SSH_COMMAND="ssh -i $HOME/.ssh/id_key -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes"
    else
      export GIT_SSH_COMMAND="ssh -i $HOME/.ssh/id_key -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new"
    fi
  fi
fi
umask 022
if [ -n "${REPO_URL:-}" ]; then
  set -- -c protocol.ext.allow=never -c protocol.file.allow=never -c core.hooksPath=/dev/null \
    clone --depth 1 --no-tags
  if [ -n "${REPO_REF:-}" ]; then
    set -- "$@" --branch "$REPO_REF"
  fi
  git "$@" -- "$REPO_URL" "$WORKDIR"
fi
