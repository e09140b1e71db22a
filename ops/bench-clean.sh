#!/usr/bin/env bash
# bench-clean.sh: how well the cleaning loop works, a benchmark command (not
# a test). Takes N Fashion-MNIST training images (Debian
# dataset-fashion-mnist), served as JPEGs over local HTTP, flips a share of
# their labels at random (seeded), and runs the lesson's loop on the
# embedded stack:
#   1. trains on the clean labels and on the noisy ones (the same recipe);
#   2. audits the noisy dataset (K folds) and scores its label suspects,
#      cut at the number of flipped images, against the planted flips;
#   3. accepts the suggestions (ursa clean --accept-suggestions: label
#      issues scoring --min-score or more relabelled, those from
#      --delete-score to --min-score deleted) and retrains;
#   4. times the console's gallery page of the suspects.
# Accuracy is on the 10,000 official test images (ursa predict), the mean
# of --runs models trained with seeds 42, 43, ... (one model's accuracy
# moves by a few tenths of a point with the data, as much as the gap).
#
#   ops/bench-clean.sh [--n N] [--noise P] [--folds K] [--epochs E] [--audit-epochs E]
#                      [--min-score S] [--delete-score S] [--runs R] [--seed S]
# (defaults: 10,000 images, 0.08, 4 folds, 10 epochs for the models compared,
# 6 for each fold of the audit, relabelling suggestions of score 0.98 or
# more and deleting label issues of 0.9 to 0.98, 3 runs)
# Targets: precision and recall of the label suspects >= 0.80; the cleaned
# retrain recovers >= 80% of the gap between noisy and clean; the audit of
# 10,000 images under 5 minutes on 2 cores; the gallery page under 300 ms.
set -euo pipefail
cd "$(dirname "$0")/.."
N=10000 NOISE=0.08 FOLDS=4 EPOCHS=10 AUDIT_EPOCHS=6 SEED=7 MIN_SCORE=0.98 DELETE_SCORE=0.9 RUNS=3
while [ $# -gt 0 ]; do
    case $1 in
    --n) N=$2; shift 2 ;;
    --noise) NOISE=$2; shift 2 ;;
    --folds) FOLDS=$2; shift 2 ;;
    --epochs) EPOCHS=$2; shift 2 ;;
    --audit-epochs) AUDIT_EPOCHS=$2; shift 2 ;;
    --min-score) MIN_SCORE=$2; shift 2 ;;
    --delete-score) DELETE_SCORE=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    *) echo "usage: $0 [--n N] [--noise P] [--folds K] [--epochs E] [--audit-epochs E] [--min-score S] [--delete-score S] [--runs R] [--seed S]" >&2; exit 2 ;;
    esac
done
ops/install-deps.sh >/dev/null
dpkg-query -W -f='${Status}' dataset-fashion-mnist 2>/dev/null | grep -q "install ok installed" ||
    { apt-get update -q >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >/dev/null; }
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
BIN=$PWD/build/bin
U="$BIN/ursa"
W=${TMPDIR:-/tmp}/ursa-bench-clean
F=/usr/share/datasets/fashion-mnist
"$U" down --state-dir "$W/state" >/dev/null 2>&1 || true
rm -rf "$W"
mkdir -p "$W/www" "$W/test"
export URSA_STATE_DIR=$W/state URSA_FETCH_ALLOW=127.0.0.1/32 URSA_IMG_MIN_SIDE=16
"$BIN/fault-server" "$W/www" "$W/port" >"$W/www.log" 2>&1 &
SRV=$!
trap '"$U" down >/dev/null 2>&1 || true; kill $SRV 2>/dev/null || true' EXIT
for i in $(seq 50); do [ -s "$W/port" ] && break; sleep 0.1; done
BASE=http://127.0.0.1:$(cat "$W/port")
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
ISA=$([ "$(grep -c avx512f /proc/cpuinfo)" -gt 0 ] && echo "AVX-512" || echo "AVX2")
echo "== $N Fashion-MNIST training images, ${NOISE} of the labels flipped (seed $SEED); $CPU, $ISA, $(nproc) cores"
"$BIN/idx2jpeg" $F/train-images-idx3-ubyte.gz $F/train-labels-idx1-ubyte.gz "$W/www" "$BASE/ds" --limit "$N" >/dev/null
"$BIN/idx2jpeg" $F/t10k-images-idx3-ubyte.gz $F/t10k-labels-idx1-ubyte.gz "$W/test" "$BASE/test" >/dev/null
python3 - "$W" "$NOISE" "$SEED" <<'EOF'
import glob, os, random, sys
w, noise, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
files = sorted(glob.glob(w + "/www/urls_*.txt"))
classes = [os.path.basename(f)[5:-4] for f in files]
rows = sorted((u, c) for f, c in zip(files, classes) for u in open(f).read().split())
rng = random.Random(seed)
with open(w + "/clean.csv", "w") as cl, open(w + "/noisy.csv", "w") as no, open(w + "/flipped.txt", "w") as fl:
    cl.write("url,label\n")
    no.write("url,label\n")
    for u, c in rows:
        cl.write(f"{u},{c}\n")
        if rng.random() < noise:
            c = rng.choice([x for x in classes if x != c])
            fl.write(u + "\n")
        no.write(f"{u},{c}\n")
EOF
NF=$(wc -l <"$W/flipped.txt")
echo "flipped: $NF labels"
"$U" up >"$W/up.log"
"$U" ingest --dataset clean "$W/clean.csv" >/dev/null
"$U" ingest --dataset noisy "$W/noisy.csv" >/dev/null

RECIPE=(--arch small --size 28 --bs 64 --stage "$EPOCHS:1e-2")
accuracy() { # MODEL: accuracy on the 10,000 test images
    "$U" export "$1" "$W/$1.onnx" >/dev/null
    find "$W/test" -name '*.jpg' | sort | xargs "$U" predict --model "$W/$1.onnx" 2>/dev/null |
        awk -F'\t' '{n = split($1, p, "/"); if (p[n - 1] == $2) r++} END {printf "%.4f", r / NR}'
}
train() { # DATASET SEED: trains, prints the model id
    "$U" train --dataset "$1" --seed "$2" "${RECIPE[@]}" >"$W/train-$1-$2.out" 2>&1
    sed -n 's/^model \([^:]*\):.*/\1/p' "$W/train-$1-$2.out" | tail -1
}
runs() { # DATASET: the mean test accuracy of RUNS models; each one's on stderr
    local r a all=""
    for r in $(seq 0 $((RUNS - 1))); do
        a=$(accuracy "$(train "$1" $((42 + r)))")
        all="$all $a"
    done
    echo "  $1 (seeds 42..$((41 + RUNS))):$all" >&2
    echo "$all" | awk '{for (i = 1; i <= NF; i++) s += $i; printf "%.4f", s / NF}'
}
echo "== training on the clean and on the noisy labels ($RUNS runs of $EPOCHS epochs of the small resnet each)"
AC=$(runs clean)
AN=$(runs noisy)
echo "clean labels: mean test accuracy $AC; noisy labels: $AN"

# precision and recall at the cut of the planted count of a suspects TSV
hits() { # TSV: "precision recall" of its label suspects
    awk -F'\t' -v n="$NF" 'FILENAME == ARGV[1] {f[$1] = 1; next} FNR > 1 && FNR <= n + 1 {c++; h += f[$1]}
        END {printf "%.4f %.4f", h / (c + (c == 0)), h / n}' "$W/flipped.txt" "$1"
}

echo "== the audit on a pretrained body: a small resnet trained on $N other Fashion-MNIST images"
"$BIN/idx2jpeg" $F/train-images-idx3-ubyte.gz $F/train-labels-idx1-ubyte.gz "$W/www" "$BASE/ds" \
    --offset "$N" --limit "$N" >/dev/null
"$U" ingest --dataset other "$W"/www/urls_*.txt >/dev/null
"$U" export "$(train other 42)" "$W/body.onnx" >/dev/null
T0=$(date +%s.%N)
"$U" audit --dataset noisy --recipe flags --arch small --size 28 --bs 64 --pretrained "$W/body.onnx" \
    --folds "$FOLDS" --stage "$AUDIT_EPOCHS:1e-2" >"$W/audit-pre.out" 2>&1
TP=$(echo "$(date +%s.%N) - $T0" | bc)
grep '^audit of' "$W/audit-pre.out"
"$U" clean --dataset noisy --kinds label >"$W/suspects-pre.tsv"
read -r PPREC PRCL <<<"$(hits "$W/suspects-pre.tsv")"
echo "pretrained audit: $(printf '%.0f' "$TP") s; precision $PPREC, recall $PRCL at the cut of $NF"

echo "== the audit of the noisy dataset, $FOLDS folds of $AUDIT_EPOCHS epochs"
T0=$(date +%s.%N)
"$U" audit --dataset noisy --recipe scratch --folds "$FOLDS" --stage "$AUDIT_EPOCHS:1e-2" >"$W/audit.out" 2>&1
TA=$(echo "$(date +%s.%N) - $T0" | bc)
grep -A1 '^audit of' "$W/audit.out"
"$U" clean --dataset noisy --kinds label >"$W/suspects.tsv"
NS=$(($(wc -l <"$W/suspects.tsv") - 1))
sort "$W/flipped.txt" >"$W/flipped.sorted"
awk -F'\t' -v n="$NF" 'NR > 1 && NR <= n + 1 {print $1}' "$W/suspects.tsv" | sort >"$W/top.txt"
HIT=$(comm -12 "$W/flipped.sorted" "$W/top.txt" | wc -l)
awk -F'\t' 'NR > 1 {print $1}' "$W/suspects.tsv" | sort >"$W/all.txt"
HITALL=$(comm -12 "$W/flipped.sorted" "$W/all.txt" | wc -l)
# suggestions right: the suggested label is the true one
RIGHT=$(awk -F'\t' -v n="$NF" 'NR > 1 && NR <= n + 1 {split($1, p, "/"); if (p[5] == $4) r++} END {print r + 0}' "$W/suspects.tsv")
# what the accept policy does to the planted flips: relabelled right, deleted,
# and clean images relabelled (broken) or deleted
POLICY=$(awk -F'\t' -v min="$MIN_SCORE" -v del="$DELETE_SCORE" 'FILENAME == ARGV[1] {f[$1] = 1; next}
    FNR > 1 {split($1, p, "/")
        if ($5 >= min) {if (f[$1] && p[5] == $4) fix++; else if (!f[$1]) brk++}
        else if ($5 >= del) {if (f[$1]) dflip++; else dclean++}}
    END {printf "%d flips relabelled right, %d flips deleted, %d clean labels broken, %d clean images deleted", fix, dflip, brk, dclean}' \
    "$W/flipped.txt" "$W/suspects.tsv")
CUT=$((NS < NF ? NS : NF))
PREC=$(echo "scale=4; $HIT / ($CUT + ($CUT == 0))" | bc)
RCL=$(echo "scale=4; $HIT / $NF" | bc)
echo "label suspects: $NS; of the top $CUT, $HIT are planted flips: precision $PREC, recall $RCL at the cut;"
echo "  all suspects hold $HITALL of the $NF flips; $RIGHT of the top $NF suggest the true label"
echo "  accepting (relabel >= $MIN_SCORE, delete $DELETE_SCORE to $MIN_SCORE): $POLICY"

echo "== accepting the suggestions and retraining"
"$U" clean --dataset noisy --accept-suggestions --kinds label --min-score "$MIN_SCORE" \
    --delete-score "$DELETE_SCORE" >"$W/accept.out"
cat "$W/accept.out"
AR=$(runs noisy)
REC=$(echo "scale=4; ($AR - $AN) / ($AC - $AN)" | bc 2>/dev/null || echo "n/a")
echo "after cleaning: mean test accuracy $AR (noisy $AN, clean $AC): recovered $REC of the gap"

echo "== the console's gallery with $N images"
P=$(cat "$W/state/run/console.port")
TOKEN=$(cat "$W/state/run/console.token")
curl -s -c "$W/cj" -X POST -H 'X-Ursa: 1' --data "token=$TOKEN" "http://127.0.0.1:$P/api/login" >/dev/null
for i in 1 2 3 4 5 6 7; do
    curl -s -b "$W/cj" -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$P/api/suspects?dataset=noisy&per=48&page=$i"
done | sort -n | sed -n 4p >"$W/gallery.s"
GMS=$(echo "$(cat "$W/gallery.s") * 1000" | bc | cut -d. -f1)
echo "gallery page (48 suspects with their source URLs), median of 7: ${GMS} ms"

echo
echo "| measure | result | target |"
echo "| --- | --- | --- |"
echo "| precision / recall of the label suspects at the cut of $NF | $PREC / $RCL | >= 0.80 each |"
echo "| test accuracy clean / noisy / cleaned (mean of $RUNS runs) | $AC / $AN / $AR | |"
echo "| share of the gap recovered | $REC | >= 0.80 |"
echo "| audit of $N images, $FOLDS folds | $(printf '%.0f' "$TA") s | < 300 s |"
echo "| audit on a pretrained body (head-only folds): time, precision / recall | $(printf '%.0f' "$TP") s, $PPREC / $PRCL | |"
echo "| console gallery page | $GMS ms | < 300 ms |"
echo "($CPU, $ISA, $(nproc) cores)"
