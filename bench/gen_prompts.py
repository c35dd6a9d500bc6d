"""The benchmark prompts of `depthprune bench-generate`: B x P token ids from
splitmix64 (seed 1), 3 + (z mod (V - 3)), shared by the Python peers."""
M64 = (1 << 64) - 1


def prompt_ids(B, P, V):
    st, ids = 1, []
    for _ in range(B * P):
        st = (st + 0x9E3779B97F4A7C15) & M64
        z = st
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        ids.append(3 + (z ^ (z >> 31)) % (V - 3))
    return ids
