"""The plan_info layout (csrc/include/plan_info.h) as the host tests read it: header fields,
per-request fields, then the work items (request, q_begin, q_end, kv_begin, kv_end,
partial_row), then, in prefill plans with work lists, the lists."""

HEADER, REQUEST_FIELDS, ITEM_FIELDS = 8, 4, 6
NUM_ITEMS, NUM_REQUESTS, NUM_LISTS, PARTIAL_ROWS, KV_CHUNK_SIZE = 0, 1, 3, 4, 6  # header fields
TASK_BLOCKS = 7  # decode: the blocks its tasks are dealt over (0: the whole grid)
KV_BEGIN, KV_END = 3, 4  # item fields
KV_LEN, PAGE_BASE = 2, 3  # request fields


def requests(plan):
    """The per-request fields of a plan, one row each."""
    return plan[HEADER : HEADER + REQUEST_FIELDS * int(plan[NUM_REQUESTS])].reshape(-1, REQUEST_FIELDS)


def items(plan):
    """The work items of a plan (numpy int32), one row each."""
    start = HEADER + REQUEST_FIELDS * plan[NUM_REQUESTS]
    return plan[start : start + ITEM_FIELDS * plan[NUM_ITEMS]].reshape(-1, ITEM_FIELDS)


def lists_start(plan):
    """Where the work lists' offsets begin: after the items."""
    return HEADER + REQUEST_FIELDS * plan[NUM_REQUESTS] + ITEM_FIELDS * plan[NUM_ITEMS]
