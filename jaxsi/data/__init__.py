"""jaxsi.data: tokenizers, verifiable tasks (synthetic, JSONL, TFDS), splits."""

from jaxsi.data import synthetic
from jaxsi.data.char_tokenizer import CharTokenizer
from jaxsi.data.jsonl import load_jsonl_tasks, read_task_records, save_jsonl_tasks
from jaxsi.data.sentencepiece_tokenizer import SentencePieceTokenizer
from jaxsi.data.spans import step_span_ids
from jaxsi.data.tasks import (Task, dedupe, get_generator, make_tasks,
                              make_train_test, problem_key, register_task,
                              split_tasks, task_names)
from jaxsi.data.tokenizer import (ASSISTANT, END, SYSTEM, TURN_MARKERS, USER,
                                  Tokenizer, TokenizerProtocol)
from jaxsi.data import chat_templates
from jaxsi.data import math_datasets
from jaxsi.data import tfds_source  # registers the 'tfds' task (tfds imported lazily)
from jaxsi.data.hf_tokenizer import HFTokenizer, load_tokenizer
