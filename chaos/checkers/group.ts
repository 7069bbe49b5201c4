// Grouping, the one collection step every checker takes (ops by client, by instance, by service).

/** Appends `value` to the list under `key`, creating the list the first time. */
export function pushTo<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [value]);
  else list.push(value);
}
