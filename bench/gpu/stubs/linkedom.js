export function parseHTML() {
  throw new Error("linkedom is not carried to the GPU benchmark machine");
}
