// The one spelling of a service name: a DNS label, so it fits a DNS answer, a SPIFFE ID's path
// segment and an Envoy cluster name alike.

/** 1-63 letters, digits or '-', not starting or ending with '-'. */
export const SERVICE_NAME_PATTERN = /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/;

export function isServiceName(name: string): boolean {
  return SERVICE_NAME_PATTERN.test(name);
}
