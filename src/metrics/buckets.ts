// Histogram buckets, in seconds, chosen once per kind of latency so that every histogram of a kind
// can be compared and aggregated with the others.

/**
 * Disk and replication: fsync, and an append's round trip (network both ways plus the follower's
 * fsync). Doubling from 0.5 ms to about 4 s, as etcd's WAL fsync buckets: a healthy SSD lands in
 * the first few, and anything past 1 s is an outage in the making.
 */
export const DISK_SECONDS_BUCKETS: readonly number[] = [0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096];

/**
 * A request from arrival to its last byte. Most answer within milliseconds; a write that meets an
 * election waits up to --leader-wait (7 s); blocking queries and streams are held for up to 10
 * minutes by design, which the top buckets keep apart from the rest.
 */
export const REQUEST_SECONDS_BUCKETS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600];

/** Signing one certificate: about 0.1 ms of ECDSA, more with RSA roots and with a CSR waiting for a verify worker. */
export const SIGNING_SECONDS_BUCKETS: readonly number[] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];
