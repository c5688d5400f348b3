"""Data: record types, readers for real formats, chat templating with loss masks, collation and packing."""
from posttrain.data.answers import last_boxed  # re-exported: MATH golds are read with the grader's rule
from posttrain.data.collate import (
                                    PackingCollator,
                                    model_inputs,
                                    pack_features,
                                    pad_collate,
                                    pair_collate,
                                    segment_ids,
)
from posttrain.data.converters import (
                                    FORMATS,
                                    clean_gsm8k_solution,
                                    detect_format,
                                    gsm8k_final_answer,
                                    parse_hh_dialogue,
)
from posttrain.data.readers import RecordList, iter_rows, iter_sourced_rows, load_records
from posttrain.data.records import Conversation, PreferencePair, PromptRecord, validate_messages
from posttrain.data.template import (
                                    IGNORE_INDEX,
                                    TemplateError,
                                    TruncationStats,
                                    assistant_spans,
                                    encode_conversation,
                                    encode_conversations,
                                    encode_pair,
                                    encode_pairs,
                                    encode_prompt,
                                    render,
)

__all__ = [
    "Conversation", "PreferencePair", "PromptRecord", "validate_messages",
    "iter_rows", "iter_sourced_rows", "load_records", "RecordList",
    "FORMATS", "detect_format", "clean_gsm8k_solution", "gsm8k_final_answer", "last_boxed",
    "parse_hh_dialogue",
    "IGNORE_INDEX", "TemplateError", "TruncationStats", "render", "assistant_spans", "encode_conversation",
    "encode_conversations", "encode_prompt", "encode_pair", "encode_pairs",
    "pad_collate", "pair_collate", "pack_features", "PackingCollator", "segment_ids", "model_inputs",
]
