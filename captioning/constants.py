"""Names and defaults shared by several modules: model-folder files, special symbols, feature files."""

# --- special symbols of the target vocabulary (ids fixed, as in Sockeye) ---
PAD_SYMBOL = "<pad>"
UNK_SYMBOL = "<unk>"
BOS_SYMBOL = "<s>"
EOS_SYMBOL = "</s>"
PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3
VOCAB_SYMBOLS = [PAD_SYMBOL, UNK_SYMBOL, BOS_SYMBOL, EOS_SYMBOL]

# --- files in a model folder (--output of train) ---
ARGS_NAME = "args.yaml"
CONFIG_NAME = "config"
VERSION_NAME = "version"
VOCAB_TRG_NAME = "vocab.trg.0.json"
PARAMS_PREFIX = "params."
PARAMS_NAME = PARAMS_PREFIX + "%05d"
PARAMS_BEST_NAME = "params.best"
METRICS_NAME = "metrics"
LOG_NAME = "log"
TRAINING_STATE_DIRNAME = "training_state"
# the format of a model folder; bumped when a folder written by an older version can no longer be read
MODEL_FORMAT_VERSION = 2   # 2: ModelConfig.image_cnn (typed) replaces the cnn_config mapping of 1

# --- feature folders (--output-root of extract_features) ---
FEATURE_SUFFIX = ".npy"
# MXNet names an internal output LAYER_output; --image-encoder-layer takes either form
LAYER_OUTPUT_SUFFIX = "_output"
IMAGE_FEATURE_SIZES_JSON = "image_feature_sizes.json"
IMAGE_FEATURE_SIZES_PKL = "image_feature_sizes.pkl"   # Sockeye 1.x's sidecar; read with a restricted unpickler
DEFAULT_SOURCE_IMAGE_SIZE = (3, 224, 224)

# --- choices shared by the CLIs and the configs ---
DECODER_RNN = "rnn"
DECODER_TRANSFORMER = "transformer"
DECODER_CNN = "cnn"
DECODERS = [DECODER_RNN, DECODER_TRANSFORMER, DECODER_CNN]
ENCODER_IMAGE = "image-pretrain-cnn"

POSITIONAL_NONE = "none"
POSITIONAL_FIXED = "fixed"
POSITIONAL_LEARNED = "learned"
POSITIONAL_TYPES = [POSITIONAL_NONE, POSITIONAL_FIXED, POSITIONAL_LEARNED]

RNN_CELL_TYPES = ["lstm", "lstm-ln", "gru", "gru-ln"]
ATTENTION_TYPES = ["bilinear", "dot", "mhdot", "fixed", "location", "mlp", "coverage"]
COVERAGE_TYPES = ["tanh", "sigmoid", "relu", "softrelu", "gru", "count"]
RNN_DECODER_STATE_INITS = ["zero", "last", "avg"]

BATCH_TYPE_SENTENCE = "sentence"
BATCH_TYPE_WORD = "word"

FEATURE_STORE_LAZY = "lazy"
FEATURE_STORE_MEMORY = "memory"
FEATURE_STORE_MMAP = "mmap"
FEATURE_STORES = [FEATURE_STORE_LAZY, FEATURE_STORE_MEMORY, FEATURE_STORE_MMAP]

LOSS_CROSS_ENTROPY = "cross-entropy"
LOSS_SELF_CRITICAL = "self-critical"
LOSSES = [LOSS_CROSS_ENTROPY, LOSS_SELF_CRITICAL]
SELF_CRITICAL_BASELINE_MEAN = "mean"        # the mean reward of the image's other samples
SELF_CRITICAL_BASELINE_GREEDY = "greedy"    # the reward of the greedy caption
SELF_CRITICAL_BASELINES = [SELF_CRITICAL_BASELINE_MEAN, SELF_CRITICAL_BASELINE_GREEDY]

# Sockeye's default --seed: a recipe that leaves the flag out draws the same numbers as with Sockeye's default
DEFAULT_SEED = 13
# the caption length bound of decoding when a Python caller gives none (train passes the bound it derives from the
# training captions): well above the length of image captions, as the recipes' --max-seq-len 1:60
FALLBACK_MAX_OUTPUT_LENGTH = 60

METRIC_PERPLEXITY = "perplexity"
METRIC_ACCURACY = "accuracy"
METRIC_BLEU = "bleu"
METRIC_CHRF = "chrf"
METRIC_CIDER = "cider"                      # CIDEr-D x 100 of --decode-and-evaluate (cider-val)
METRICS_OPTIMIZABLE = [METRIC_PERPLEXITY, METRIC_ACCURACY, METRIC_BLEU, METRIC_CHRF, METRIC_CIDER]
AVERAGE_STRATEGIES = ["best", "last", "lifespan"]   # captioning.average --strategy (the first is the default)
METRIC_MAXIMIZE = {METRIC_PERPLEXITY: False, METRIC_ACCURACY: True, METRIC_BLEU: True, METRIC_CHRF: True,
                   METRIC_CIDER: True}

OUTPUT_TYPE_TRANSLATION = "translation"
OUTPUT_TYPE_TRANSLATION_WITH_SCORE = "translation_with_score"
OUTPUT_TYPE_SCORE = "score"
OUTPUT_TYPE_JSON = "json"
OUTPUT_TYPE_TRANSLATION_WITH_ALIGNMENTS = "translation_with_alignments"
OUTPUT_TYPES = [OUTPUT_TYPE_TRANSLATION, OUTPUT_TYPE_TRANSLATION_WITH_SCORE, OUTPUT_TYPE_SCORE,
                OUTPUT_TYPE_JSON, OUTPUT_TYPE_TRANSLATION_WITH_ALIGNMENTS]
