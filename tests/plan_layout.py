"""The plan_info layout (csrc/include/plan_info.h) as the host tests read it: header fields, the
work items (request, q_begin, q_end, kv_begin, kv_end, partial_row, kv_len, page_base), the
per-request fields (partial_base, num_splits), then, in prefill plans with work lists, the
lists."""

HEADER, ITEM_FIELDS, REQUEST_FIELDS = 8, 8, 2
NUM_ITEMS, NUM_REQUESTS, NUM_LISTS, PARTIAL_ROWS, KV_CHUNK_SIZE = 0, 1, 3, 4, 6  # header fields
TASK_BLOCKS = 7  # decode: the blocks its tasks are dealt over (0: the whole grid)
REQUEST, KV_BEGIN, KV_END, PARTIAL_ROW, KV_LEN, PAGE_BASE = 0, 3, 4, 5, 6, 7  # item fields
PARTIAL_BASE, NUM_SPLITS = 0, 1  # request fields


def items(plan):
    """The work items of a plan (numpy int32), one row each."""
    return plan[HEADER : HEADER + ITEM_FIELDS * int(plan[NUM_ITEMS])].reshape(-1, ITEM_FIELDS)


def requests(plan):
    """The per-request fields of a plan, one row each: after the items."""
    start = HEADER + ITEM_FIELDS * int(plan[NUM_ITEMS])
    return plan[start : start + REQUEST_FIELDS * int(plan[NUM_REQUESTS])].reshape(-1, REQUEST_FIELDS)


def lists_start(plan):
    """Where the work lists' offsets begin: after the requests."""
    return HEADER + ITEM_FIELDS * int(plan[NUM_ITEMS]) + REQUEST_FIELDS * int(plan[NUM_REQUESTS])


def decode_plan_size(plan):
    """The prefix of a decode plan (no work lists) that a run reads: its header, items and requests."""
    return lists_start(plan)
