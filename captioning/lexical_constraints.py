"""Lexically constrained search: phrases every caption must contain, phrases no caption may contain.

Positive constraints follow the dynamic beam allocation of Post & Vilar (2018), as Sockeye 1.18 had it: every
hypothesis tracks which constraint tokens it has produced (`ConstrainedHypothesis`); at each step the candidates
are the usual best continuations plus, for every hypothesis, the next token of each unmet constraint and its single
best word; the beam is then split into banks by the number of constraint tokens met, so that hypotheses that have
made progress on the constraints are not crowded out by ones that have not. ``</s>`` is allowed only once every
constraint is met. Avoided phrases are kept in a trie (`AvoidTrie`); a word that would complete one is blocked.

Run as a program, the module turns ``PATH<TAB>phrase<TAB>phrase...`` lines into the captioner's JSON input lines
(``--avoid`` makes the phrases avoided ones), like Sockeye's helper of the same name.
"""
import json
import logging
import sys
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Optional, Sequence, Set, Tuple

import numpy as np

from . import constants as C
from . import utils

logger = logging.getLogger(__name__)

Phrase = Tuple[int, ...]


@dataclass(frozen=True)
class Constraints:
    """The lexical constraints of one input, as word ids: phrases to include and phrases to avoid."""
    include: Tuple[Phrase, ...] = ()
    avoid: Tuple[Phrase, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.include or self.avoid)


def phrases_to_ids(phrases: Sequence[str], vocab: Dict[str, int], where: str, kind: str) -> Tuple[Phrase, ...]:
    """Whitespace-tokenised phrases -> tuples of word ids. A phrase with a word the vocabulary lacks (or a special
    symbol) cannot be produced by the model: it is left out with a warning naming ``where`` (the input line)."""
    result: List[Phrase] = []
    for phrase in phrases:
        words = phrase.split()
        if not words:
            continue
        unknown = [w for w in words if w not in vocab or vocab[w] < len(C.VOCAB_SYMBOLS)]
        if unknown:
            logger.warning("%s: %s phrase %r ignored: %s%s not in the model's vocabulary", where, kind,
                           _shorten(phrase), ", ".join(repr(_shorten(w)) for w in unknown[:5]),
                           " and %d more" % (len(unknown) - 5) if len(unknown) > 5 else "")
            continue
        result.append(tuple(vocab[w] for w in words))
    return tuple(result)


def possible_constraints(include: Sequence[Phrase], avoid: Sequence[Phrase], max_output_length: int, where: str,
                         words: Optional[Dict[int, str]] = None) -> Tuple[Phrase, ...]:
    """The constraint phrases a caption can meet: a phrase that contains an avoided phrase can never be produced,
    and all of them together must fit in ``max_output_length`` tokens (phrases are kept in order while they fit).
    Each one left out is a warning naming ``where`` (the input line)."""
    def text(phrase: Phrase) -> str:
        return _shorten(" ".join(words.get(w, str(w)) for w in phrase) if words else " ".join(map(str, phrase)))

    kept: List[Phrase] = []
    length = 0
    for phrase in include:
        blocking = next((a for a in avoid if _contains(phrase, a)), None)
        if blocking is not None:
            logger.warning("%s: constraint %r contains the avoided phrase %r and can never be met; ignored",
                           where, text(phrase), text(blocking))
            continue
        if length + len(phrase) > max_output_length:
            logger.warning("%s: constraint %r ignored: the constraints need %d words, more than the maximum output "
                           "length %d (--max-output-length)", where, text(phrase), length + len(phrase),
                           max_output_length)
            continue
        kept.append(phrase)
        length += len(phrase)
    return tuple(kept)


def _shorten(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters for a log message (a hostile input line can be long)."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _contains(phrase: Phrase, part: Phrase) -> bool:
    """Whether ``part`` occurs contiguously in ``phrase``."""
    n = len(part)
    return any(phrase[i:i + n] == part for i in range(len(phrase) - n + 1))


# ---------------------------------------------------------------------------------------------------------------
# positive constraints
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConstrainedHypothesis:
    """Which constraint phrases one hypothesis has produced. Immutable: `advance` returns a new one.
    ``progress`` is ``(phrase index, tokens matched)`` of a multi-word phrase begun but not finished; a word that
    does not continue it undoes the partial match (the phrase must appear contiguously)."""
    phrases: Tuple[Phrase, ...]
    met: Tuple[bool, ...]
    progress: Optional[Tuple[int, int]] = None

    @classmethod
    def create(cls, phrases: Tuple[Phrase, ...]) -> "ConstrainedHypothesis":
        return cls(phrases, (False,) * len(phrases))

    def num_needed(self) -> int:
        """Constraint tokens in all."""
        return sum(len(p) for p in self.phrases)

    def num_met(self) -> int:
        """Constraint tokens produced so far (a phrase in progress counts its matched tokens)."""
        done = sum(len(p) for p, m in zip(self.phrases, self.met) if m)
        return done + (self.progress[1] if self.progress is not None else 0)

    def all_met(self) -> bool:
        return all(self.met)

    def allowed(self) -> Set[int]:
        """Words that make progress: the next word of the phrase in progress, else the first word of every unmet
        phrase."""
        if self.progress is not None:
            index, matched = self.progress
            return {self.phrases[index][matched]}
        return {p[0] for p, m in zip(self.phrases, self.met) if not m}

    def advance(self, word: int) -> "ConstrainedHypothesis":
        """The state after producing ``word``."""
        if self.progress is not None:
            index, matched = self.progress
            phrase = self.phrases[index]
            if phrase[matched] == word:
                if matched + 1 == len(phrase):
                    return ConstrainedHypothesis(self.phrases, _set(self.met, index), None)
                return ConstrainedHypothesis(self.phrases, self.met, (index, matched + 1))
        for index, (phrase, met) in enumerate(zip(self.phrases, self.met)):
            if not met and phrase[0] == word:
                if len(phrase) == 1:
                    return ConstrainedHypothesis(self.phrases, _set(self.met, index), None)
                return ConstrainedHypothesis(self.phrases, self.met, (index, 1))
        if self.progress is None:
            return self
        return ConstrainedHypothesis(self.phrases, self.met, None)


def _set(flags: Tuple[bool, ...], index: int) -> Tuple[bool, ...]:
    return flags[:index] + (True,) + flags[index + 1:]


# ---------------------------------------------------------------------------------------------------------------
# avoided phrases
# ---------------------------------------------------------------------------------------------------------------

class AvoidTrie:
    """A trie of the phrases to avoid. A state is the set of trie nodes reached by suffixes of the words produced so
    far (the root is always implied); a word is blocked when it would complete a phrase from such a node."""

    def __init__(self, phrases: Sequence[Phrase]) -> None:
        self.children: List[Dict[int, int]] = [{}]
        self.final: List[bool] = [False]
        for phrase in phrases:
            node = 0
            for word in phrase:
                nxt = self.children[node].get(word)
                if nxt is None:
                    nxt = len(self.children)
                    self.children[node][word] = nxt
                    self.children.append({})
                    self.final.append(False)
                node = nxt
            self.final[node] = True

    def blocked(self, state: FrozenSet[int]) -> List[int]:
        """Words that would complete an avoided phrase."""
        words: List[int] = []
        for node in (0, *state):
            words.extend(w for w, child in self.children[node].items() if self.final[child])
        return words

    def consume(self, state: FrozenSet[int], word: int) -> FrozenSet[int]:
        """The state after ``word``."""
        nodes = set()
        for node in (0, *state):
            child = self.children[node].get(word)
            if child is not None and self.children[child]:
                nodes.add(child)
        return frozenset(nodes)


# ---------------------------------------------------------------------------------------------------------------
# the per-step selection of a constrained beam
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class Selection:
    """The beam chosen for one input at one step: parent row (within the input's beam), word, score, new state."""
    rows: List[int] = field(default_factory=list)
    words: List[int] = field(default_factory=list)
    scores: List[float] = field(default_factory=list)
    hyps: List[ConstrainedHypothesis] = field(default_factory=list)


def bank_sizes(counts: Sequence[int], beam_size: int) -> List[int]:
    """How many beam slots each bank (index = constraint tokens met) gets: an even split, the remainder to the banks
    with the most constraints met; slots a bank cannot fill (too few candidates) go to the fullest banks first."""
    num_banks = len(counts)
    sizes = [beam_size // num_banks] * num_banks
    for b in range(beam_size % num_banks):
        sizes[num_banks - 1 - b] += 1
    spare = 0
    for b in range(num_banks):
        if sizes[b] > counts[b]:
            spare += sizes[b] - counts[b]
            sizes[b] = counts[b]
    for b in reversed(range(num_banks)):
        if spare == 0:
            break
        extra = min(spare, counts[b] - sizes[b])
        sizes[b] += extra
        spare -= extra
    return sizes


def constrained_topk(scores: np.ndarray, hyps: Sequence[ConstrainedHypothesis], inactive: np.ndarray,
                     beam_size: int) -> Selection:
    """Choose the next beam of one input. ``scores`` (K, V): the cost of every continuation of every row (inf where
    not allowed; an inactive row has only its ``<pad>`` continuation); ``hyps``: each row's constraint state.
    Candidates: the best K overall, each active row's constraint words, each row's single best word. They are
    grouped into banks by constraint tokens met and the best of each bank kept (`bank_sizes`)."""
    k_rows, vocab_size = scores.shape
    flat = scores.reshape(-1)
    candidates: Set[Tuple[int, int]] = set()
    top = np.argpartition(flat, min(beam_size, flat.size - 1))[:beam_size] if flat.size > beam_size \
        else np.arange(flat.size)
    candidates.update((int(i // vocab_size), int(i % vocab_size)) for i in top)
    best = scores.argmin(axis=1)
    for row in range(k_rows):
        candidates.add((row, int(best[row])))
        if not inactive[row]:
            candidates.update((row, w) for w in hyps[row].allowed())
    entries = []
    for row, word in candidates:
        score = float(scores[row, word])
        if not np.isfinite(score):
            continue
        hyp = hyps[row] if inactive[row] else hyps[row].advance(word)
        entries.append((hyp.num_met(), score, row, word, hyp))
    num_banks = hyps[0].num_needed() + 1 if hyps else 1
    banks: List[List[tuple]] = [[] for _ in range(num_banks)]
    for entry in entries:
        banks[entry[0]].append(entry)
    sizes = bank_sizes([len(b) for b in banks], beam_size)
    chosen = []
    for bank, size in zip(banks, sizes):
        bank.sort(key=lambda e: (e[1], e[2], e[3]))
        chosen.extend(bank[:size])
    chosen.sort(key=lambda e: (e[1], -e[0], e[2], e[3]))
    selection = Selection()
    for _, score, row, word, hyp in chosen:
        selection.rows.append(row)
        selection.words.append(word)
        selection.scores.append(score)
        selection.hyps.append(hyp)
    while len(selection.rows) < beam_size:  # fewer finite candidates than slots: dead rows
        selection.rows.append(0)
        selection.words.append(C.PAD_ID)
        selection.scores.append(float("inf"))
        selection.hyps.append(hyps[0])
    return selection


# ---------------------------------------------------------------------------------------------------------------
# CLI: PATH<TAB>phrase<TAB>... -> JSON input lines
# ---------------------------------------------------------------------------------------------------------------

def make_json_line(line: str, avoid: bool, constraints: Optional[Sequence[str]] = None,
                   avoid_phrases: Optional[Sequence[str]] = None) -> str:
    """One ``PATH<TAB>phrase...`` line as the captioner's JSON input line."""
    fields = [f.strip() for f in line.split("\t")]
    path, phrases = fields[0], [" ".join(f.split()) for f in fields[1:] if f.split()]
    record: Dict[str, object] = {"text": path}
    include = list(constraints or []) + ([] if avoid else phrases)
    excluded = list(avoid_phrases or []) + (phrases if avoid else [])
    if include:
        record["constraints"] = include
    if excluded:
        record["avoid"] = excluded
    return json.dumps(record, ensure_ascii=False)


def _main(argv: Optional[Sequence[str]] = None) -> None:
    from . import arguments, log
    parser = arguments.ConfigArgumentParser(
        prog="python -m captioning.lexical_constraints",
        description="Turn lines 'PATH<TAB>phrase<TAB>phrase...' into JSON input lines for captioner --json-input.")
    arguments.add_lexical_constraints_args(parser)
    arguments.add_logging_args(parser)
    args = parser.parse_args(argv)
    log.setup_main_logger(console=not args.quiet, level=args.loglevel)
    if args.output:
        utils.check_output_file(args.output, "--output")
        utils.check_not_an_input(args.output, "--output", [("--input", args.input) if args.input else
                                                           ("standard input", "/dev/stdin")])
    else:
        utils.check_stream_open(sys.stdout)
    if not args.input:
        utils.check_stream_open(sys.stdin)
    where = args.input or "<stdin>"
    if args.input:
        lines = utils.read_lines(args.input)
    else:
        lines = [utils.decode_line(raw, utils.location(where, number))
                 for number, raw in enumerate(sys.stdin.buffer, 1)]
    out = []
    for number, line in enumerate(lines, 1):
        utils.check_condition(line.split("\t")[0].strip() != "",
                              "%s: empty path; expected 'PATH<TAB>phrase<TAB>...'" % utils.location(where, number))
        out.append(make_json_line(line, args.avoid, args.constraints, args.avoid_phrases))
    text = "".join(line + "\n" for line in out)
    if args.output:
        utils.atomic_write_text(args.output, text)
    else:
        sys.stdout.write(text)


def main(argv: Optional[Sequence[str]] = None) -> None:
    utils.run_cli(_main, argv)


if __name__ == "__main__":
    main()
