#!/usr/bin/env bash
# make demo: the whole pipeline on the bundled synthetic data set, on the CPU.
#   images -> features -> model -> captions (from features and straight from images) -> scores -> pictures
set -euo pipefail
PY=${PYTHON:-python}
OUT=${DEMO_DIR:-demo_output}
DATA=$OUT/data
FEATS=$OUT/features
MODEL=$OUT/model
RESULTS=$OUT/results
UPDATES=${DEMO_UPDATES:-600}
step() { printf '\n=== %s\n' "$*" >&2; }

rm -rf "$OUT"
mkdir -p "$RESULTS"

step "1/7 drawing a synthetic data set (1000 train, 100 val, 100 test images; 5 captions each)"
$PY -m captioning.synthetic "$DATA" --train 1000 --val 100 --test 100 --seed 1

step "2/7 extracting CNN features (layer stage4_unit2_conv2: 64 x 8 x 8)"
for split in train val test; do
  $PY -m captioning.extract_features --image-root "$DATA" --input "$DATA/$split.images" \
      --output-root "$FEATS" --output "$FEATS/$split.features" --use-cpu --batch-size 128 \
      --source-image-size 3 128 128 --image-encoder-model-path "$DATA/cnn/synthetic-cnn" \
      --image-encoder-layer stage4_unit2_conv2
done

step "3/7 training an LSTM decoder with attention ($UPDATES updates; BLEU on validation at every checkpoint)"
$PY -m captioning.train --source-root "$FEATS" --source "$FEATS/train.features" --target "$DATA/train.captions" \
    --validation-source-root "$FEATS" --validation-source "$FEATS/val.features" \
    --validation-target "$DATA/val.captions" \
    --batch-size 64 --initial-learning-rate 0.001 --gradient-clipping-threshold 1.0 --bucket-width 5 \
    --max-seq-len 1:60 --fill-up replicate --output "$MODEL" --encoder image-pretrain-cnn \
    --rnn-num-hidden 256 --num-embed 128 --image-encoder-num-hidden 256 --rnn-decoder-state-init zero \
    --checkpoint-frequency 150 --weight-normalization --load-all-features-to-memory \
    --decode-and-evaluate 100 --max-output-length 30 --max-updates "$UPDATES" --use-cpu

step "4/7 captioning the test images from their features (beam 3)"
$PY -m captioning.captioner --models "$MODEL" --input "$FEATS/test.features" --source-root "$FEATS" \
    --batch-size 64 --beam-size 3 --use-cpu > "$RESULTS/test.predictions"
head -n 5 "$RESULTS/test.predictions" >&2

step "5/7 captioning the same images straight from the pictures (must give the same captions)"
$PY -m captioning.captioner --extract-image-features --source-image-size 3 128 128 \
    --image-encoder-model-path "$DATA/cnn/synthetic-cnn" --models "$MODEL" --input "$DATA/test.images" \
    --source-root "$DATA" --batch-size 64 --beam-size 3 --use-cpu > "$RESULTS/test.predictions.from-images"
if cmp -s "$RESULTS/test.predictions" "$RESULTS/test.predictions.from-images"; then
  echo "identical captions from features and from images" >&2
else
  echo "captions from images differ from captions from features" >&2; exit 1
fi

step "6/7 scoring against the 5 references of each test image"
refs=("$DATA/test.captions")
for k in 1 2 3 4; do refs+=("$DATA/test.captions.$k"); done
$PY -m captioning.evaluate --hypotheses "$RESULTS/test.predictions" --references "${refs[@]}" \
    | tee "$RESULTS/test.scores"

step "7/7 drawing pictures: captions, attention maps, training curves, an HTML report"
$PY -m captioning.captioner --models "$MODEL" --input "$FEATS/test.features" --source-root "$FEATS" \
    --batch-size 64 --beam-size 3 --use-cpu --output-type translation_with_alignments \
    --output "$RESULTS/test.alignments"
$PY -m captioning.visualize --image-root "$DATA" --source "$DATA/test.images" \
    --prediction "$RESULTS/test.predictions" --ground-truth "${refs[@]}" \
    --save-to-folder "$RESULTS/pages" --images-per-page 8
$PY -m captioning.visualize --image-root "$DATA" --source "$DATA/test.images" \
    --prediction "$RESULTS/test.predictions" --alignments "$RESULTS/test.alignments" \
    --save-to-folder "$RESULTS/attention" --skip-images 10
$PY -m captioning.visualize --metrics "$MODEL/metrics" --save-to-folder "$RESULTS/curves"
$PY -m captioning.visualize --image-root "$DATA" --source "$DATA/test.images" \
    --prediction "$RESULTS/test.predictions" --ground-truth "${refs[@]}" --html "$RESULTS/report"

step "done"
cat >&2 <<MSG
model folder:          $MODEL (metrics: $MODEL/metrics)
test captions:         $RESULTS/test.predictions
scores:                $RESULTS/test.scores
caption pages:         $RESULTS/pages/
attention maps:        $RESULTS/attention/
training curves:       $RESULTS/curves/
HTML report:           $RESULTS/report/index.html
MSG
