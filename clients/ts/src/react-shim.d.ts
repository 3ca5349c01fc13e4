// The two React hooks the `useChannel` hook uses, declared here so the client
// builds without React's type package; applications bring React itself.
declare module 'react' {
  export function useState<T>(initial: T | (() => T)): [T, (next: T | ((previous: T) => T)) => void];
  export function useEffect(effect: () => void | (() => void), deps?: readonly unknown[]): void;
}
