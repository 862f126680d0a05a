/**
 * The canonical row of every dataset the toolkit reads (see `loadDataset` in `dataset.ts`).
 *
 * @module
 */

/**
 * A lazily decoded image: a file path (resolved, inside the dataset's folder) or the encoded bytes
 * (PNG, JPEG, ...) as Hugging Face parquet files embed them. Decode with `decodeImage` (`images.ts`).
 */
export interface ImageRef {
  /** Absolute path of the image file, when the image lives on disk. */
  path?: string;
  /** The encoded image bytes, when the dataset embeds them. */
  bytes?: Uint8Array;
  /** The file name the dataset recorded for embedded bytes (informational). */
  name?: string;
  /** The dataset file this image came from (for error messages). */
  file?: string;
  /** The 1-based row of that file (for error messages). */
  row?: number;
}

/** One multiple-choice question in the canonical shape. */
export interface Row {
  /** Unique within a loaded table; seeds and resumable runs key on it. */
  id: string;
  /** The question text (for PubMedQA, followed by its contexts). */
  question: string;
  /** Ordered options, letter -> text (`{A: "Yes", B: "No"}`). */
  options: Record<string, string>;
  /** The correct option's letter. */
  answerLabel: string;
  /** The correct option's text. */
  answer: string;
  /** The question's images, in order (empty for text-only questions). */
  images: ImageRef[];
  /** A reasoning trace (the recipe's SFT target), when the dataset has one. */
  reasoning?: string | null;
  /** The benchmark / source name (`dataset_name`). */
  datasetName?: string;
  /** The dataset's own content hash, when present (used by the overlap check). */
  hash?: string | null;
}
