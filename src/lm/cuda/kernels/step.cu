// Bookkeeping of the captured frame step.

// Backbone input ids of the next frame: ids[r*C + c] = frame[c] + c·vocab for every row.
extern "C" __global__ void frame_ids(const u32* frame, u32* ids, int rows, int codebooks, int vocab) {
    allow_dependents();
    wait_for_producers();
    int i = threadIdx.x;
    if (i < rows * codebooks) {
        int c = i % codebooks;
        ids[i] = frame[c] + (u32)(c * vocab);
    }
}

// state = [backbone position of the next frame, index of the next frame].
extern "C" __global__ void advance(u32* state) {
    allow_dependents();
    wait_for_producers();
    state[0] += 1;
    state[1] += 1;
}
