// Compaction, beside the Ready loop: once enough entries are applied, the state machine captures
// its state at once (later applies must not leak in), encodes it without blocking the event loop,
// and the core and the disk take it as the new snapshot. The core keeps a catch-up margin of
// entries below it (RaftConfig.catchUpEntries), so followers a little behind still get appends.

import type { Logger } from "pino";
import { asError } from "../../common/errors.js";
import type { RaftNode } from "../core/raft.js";
import type { StateMachine } from "../state_machine.js";
import type { LogStorage } from "../storage/log_storage.js";
import { type AddressBook, encodeSnapshotEnvelope } from "./membership.js";
import type { DriverSettings } from "./settings.js";

export class Compactor {
  private compacting = false;

  constructor(
    private readonly settings: DriverSettings,
    private readonly core: RaftNode,
    private readonly stateMachine: StateMachine,
    private readonly storage: LogStorage,
    private readonly addresses: AddressBook,
    private readonly log: Logger,
    private readonly host: { running(): boolean; fail(err: Error): void },
  ) {}

  /** Starts a compaction at `appliedIndex` (what the state machine holds now) once it is due. */
  maybeCompact(appliedIndex: number): void {
    if (this.compacting || appliedIndex - this.core.log.snapshotIndex() < this.settings.snapshotEntries) return;
    this.compacting = true;
    const members = new Map(this.addresses.all);
    const appData = this.stateMachine.snapshot();
    void (async () => {
      try {
        const data = encodeSnapshotEnvelope(members, await appData);
        // A snapshot from the leader may have replaced the log past this point meanwhile.
        if (!this.host.running() || appliedIndex <= this.core.log.snapshotIndex()) return;
        const snapshot = this.core.compact(appliedIndex, data);
        await this.storage.saveSnapshot(snapshot);
        this.core.log.releaseSnapshotData(appliedIndex);
        this.settings.observer.snapshot("compacted");
        this.log.info({ index: appliedIndex, bytes: data.byteLength, firstIndex: this.core.log.firstIndex() }, "compacted the log into a snapshot");
      } catch (err) {
        this.host.fail(asError(err));
      } finally {
        this.compacting = false;
      }
    })();
  }
}
