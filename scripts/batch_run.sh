#!/usr/bin/env bash
# Depth for every video in one or more folders, one output folder each. Resumable: after an
# interruption, run the same command again and finished videos are skipped.
#
#   scripts/batch_run.sh clips/day1 clips/day2          # preset fast, outputs under output/
#   OUT=/data/depth PRESET=full scripts/batch_run.sh clips/*/
#   CHECKPOINT=/models/rollingdepth-v1-0 ARGS="--res 512 --save-png16" scripts/batch_run.sh clips/day1
set -uo pipefail

out=${OUT:-output}
preset=${PRESET:-fast}
checkpoint=${CHECKPOINT:-prs-eth/rollingdepth-v1-0}
read -r -a extra <<< "${ARGS:-}"  # more run-video options, split on spaces
status=0

if [ "$#" -eq 0 ]; then
  echo "usage: $0 FOLDER [FOLDER ...]" >&2
  exit 2
fi

for folder in "$@"; do
  name=$(basename "${folder%/}")
  run-video "$folder" -o "$out/$name" -p "$preset" -c "$checkpoint" --skip-existing "${extra[@]}"
  code=$?
  if [ "$code" -eq 130 ]; then
    echo "interrupted" >&2
    exit 130
  elif [ "$code" -ne 0 ]; then
    echo "$folder: some videos failed (exit $code); see the summary above" >&2
    status=1
  fi
done
exit "$status"
