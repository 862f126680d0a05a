export class OpenAI {
  constructor() {
    throw new Error("openai is not carried to the GPU benchmark machine");
  }
}
