#!/usr/bin/env bash
# Screenshot of the MLflow UI comparison view of the two latest local pipeline runs.
#
#   docs/mlflow_compare.sh [STORE] [EXPERIMENT] [OUT.png]
#
# STORE defaults to ./mlruns.db (what `make demo` writes), EXPERIMENT to celo-smoke and the
# picture to docs/mlflow_compare.png. Needs full mlflow (the `pipeline` extra) and Debian's
# `chromium`; the UI runs on 127.0.0.1 with one worker and is stopped afterwards.
set -euo pipefail
STORE=${1:-mlruns.db}
EXPERIMENT=${2:-celo-smoke}
OUT=${3:-docs/mlflow_compare.png}
PORT=${PORT:-5077}
VENV_BIN=${VENV:-.venv}/bin
URI="sqlite:///$(realpath "$STORE")"

# the two most recent pipeline (parent) runs and their experiment id
read -r EXP_ID RUN_A RUN_B < <("$VENV_BIN/python" - "$URI" "$EXPERIMENT" <<'EOF'
import sys
from mlflow import MlflowClient
client = MlflowClient(tracking_uri=sys.argv[1])
exp = client.get_experiment_by_name(sys.argv[2])
runs = client.search_runs([exp.experiment_id], "tags.`celo.role` = 'pipeline'",
                          order_by=["attributes.start_time DESC"], max_results=2)
if len(runs) < 2:
    sys.exit(f"need two pipeline runs in {sys.argv[2]!r}, found {len(runs)}")
print(exp.experiment_id, runs[1].info.run_id, runs[0].info.run_id)
EOF
)

MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false "$VENV_BIN/mlflow" ui --backend-store-uri "$URI" \
  --host 127.0.0.1 --port "$PORT" --workers 1 > /tmp/mlflow_ui.log 2>&1 &
UI_PID=$!
trap 'kill "$UI_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break
  sleep 0.5
done

URL="http://127.0.0.1:$PORT/#/compare-runs?runs=[%22$RUN_A%22,%22$RUN_B%22]&experiments=[%22$EXP_ID%22]"
PROFILE=$(mktemp -d)
chromium --headless --no-sandbox --disable-gpu --user-data-dir="$PROFILE" \
  --window-size=1600,2200 --virtual-time-budget=25000 --hide-scrollbars \
  --screenshot="$OUT" "$URL" 2> /dev/null
rm -rf "$PROFILE"
echo "compared runs $RUN_A and $RUN_B of experiment $EXPERIMENT ($EXP_ID): $OUT"
