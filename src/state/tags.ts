// One Raft log carries the commands of several state machines; the first byte of every normal
// entry names the one it belongs to.

export const STATE_TAG_KV = 1;
export const STATE_TAG_REGISTRY = 2;
export const STATE_TAG_CA = 3;
export const STATE_TAG_ACL = 4;
/** A backup being restored: staged in pieces, then applied to every machine above at once (src/state/restore.ts). */
export const STATE_TAG_RESTORE = 5;
export const STATE_TAG_INTENTIONS = 6;

export function withTag(tag: number, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(data.byteLength + 1);
  out[0] = tag;
  out.set(data, 1);
  return out;
}
