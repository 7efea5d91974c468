#!/bin/sh
# compose.yaml's one-shot `import` service (image target `tools` of deploy/Dockerfile: the switch
# binary on PostgreSQL's Debian image, for sh and psql). Runs before the replicas start:
#
#   1. `switch migrate`: the schema, as every replica would apply it at start;
#   2. if the store has no account yet: `switch import` of IMPORT_DATA_DIR when it holds an
#      accounts.csv (mount your files there), else of a demo set made by `switch demo-data`
#      (DEMO_ACCOUNTS, DEMO_ORDERS, DEMO_SEED: the same set `switch demo-data` writes on the host
#      with those arguments, so loadgen can use it);
#   3. otherwise nothing: a second `docker compose up` finds the rows of the first and leaves them
#      (switch import refuses rows already there, and would fail the start of the replicas).
#
# `switch import` is all or nothing (one transaction), so an import that failed half-way left
# no rows and the next `up` tries again. Exit status non-zero only on a real failure.
set -eu

: "${SWITCH_STORE:?SWITCH_STORE (the PostgreSQL URL) is not set}"

switch migrate --store "$SWITCH_STORE"

# psql reads the same URL (PGPASSWORD from the environment, as the switch does).
has_accounts="$(psql "$SWITCH_STORE" -X -q -t -A -v ON_ERROR_STOP=1 \
  -c 'SELECT EXISTS (SELECT 1 FROM accounts)')"
if [ "$has_accounts" = t ]; then
  echo "import: the store has accounts already; nothing imported"
  exit 0
fi

dir="${IMPORT_DATA_DIR:-}"
if [ -z "$dir" ] || [ ! -f "$dir/accounts.csv" ]; then
  dir="$(mktemp -d)"
  switch demo-data --out "$dir" \
    --accounts "${DEMO_ACCOUNTS:-10000}" --orders "${DEMO_ORDERS:-10000}" --seed "${DEMO_SEED:-1}"
  echo "import: generated a demo data set"
fi
switch import --store "$SWITCH_STORE" --data-dir "$dir"
echo "import: loaded $dir/accounts.csv and $dir/orders.csv"
