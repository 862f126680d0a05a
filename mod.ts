/**
 * medthink: teach vision-language models to reason about medical questions, in Deno.
 *
 * The MedVLThinker recipe as composable functions: {@link probe} each question's difficulty with the
 * model itself, {@link filter} to the questions worth learning from, train by {@link sft} or {@link grpo},
 * and {@link evaluate} on medical benchmarks. Models are Hugging Face Qwen2 / Qwen2.5 / Qwen2.5-VL
 * checkpoints run in TensorFlow.js; tables are arquero; plots are Observable Plot.
 *
 * @example
 * ```ts
 * import { loadModel, loadTokenizer } from "./mod.ts";
 * const model = await loadModel("medthink-tiny", { backend: "cpu" });
 * const tok = await loadTokenizer();
 * const { inputIds, attentionMask } = tok.encodeBatch(["Which organ secretes insulin?"]);
 * const out = await model.generate(inputIds, { attentionMask, maxNewTokens: 4, temperature: 0 });
 * console.log(tok.decode(out.tokens[0]));
 * model.dispose();
 * ```
 *
 * @module
 */

// Backends, tensors, and the third-party namespaces a user works with (the same pinned versions)
import { arquero } from "./lib/util/deps.ts";
export { tf } from "./lib/util/deps.ts";
/**
 * arquero 8.0.3, the table library every dataset and result of the toolkit is (`aq.from(rows)`,
 * `aq.table(columns)`): the same copy the library uses, so tables pass between the two unchanged.
 */
export const aq: typeof arquero = arquero;
export { parseYaml } from "./lib/util/yaml.ts";
export {
  BACKEND_NAMES,
  backendAvailable,
  backendUnavailableReason,
  useBackend,
} from "./lib/model/backend.ts";
export type { UseBackendOptions } from "./lib/model/backend.ts";

// Models
export type {
  BackendName,
  CausalLM,
  ForwardOptions,
  GenerateOptions,
  GenerateResult,
  HalfWeight,
  LoraAdapter,
  ModelConfig,
  VisionConfig,
} from "./lib/model/types.ts";
export { parseConfig, readConfig } from "./lib/model/config.ts";
export { loadModel, registerArchitecture, saveModel } from "./lib/model/load.ts";
export type { ArchitectureLoader, LoadModelOptions, SaveModelOptions } from "./lib/model/load.ts";
export { Qwen2Model } from "./lib/model/qwen2.ts";
export { Qwen25VLModel } from "./lib/model/qwen25vl.ts";
export { defaultModelDir, ensureTinyModel, TINY_MODEL_NAME } from "./lib/model/tiny.ts";
export { defaultVLModelDir, ensureTinyVLModel, TINY_VL_MODEL_NAME } from "./lib/model/tiny_vl.ts";
export { readSafetensors, readSafetensorsHeader, writeSafetensors } from "./lib/model/safetensors.ts";

// Tokenizer and data
export { expandImageTokens, loadTokenizer, Tokenizer } from "./lib/data/tokenizer.ts";
export type {
  ChatContentPart,
  ChatMessage,
  ChatTemplateOptions,
  EncodedBatch,
} from "./lib/data/tokenizer.ts";
export { loadDataset, loadReport, tableRows } from "./lib/data/dataset.ts";
export type { DatasetFormat, LoadDatasetOptions, LoadReport } from "./lib/data/dataset.ts";
export type { ImageRef, Row } from "./lib/data/types.ts";
export { decodeImage } from "./lib/data/images.ts";
export { processImages } from "./lib/data/processor.ts";
export {
  buildPrompt,
  buildSftMessages,
  RECIPE_INSTRUCTION,
  RECIPE_TEMPLATE,
  sftTarget,
} from "./lib/data/prompt.ts";
export type { PromptOptions } from "./lib/data/prompt.ts";
export {
  classifyLabValue,
  LAB_ANALYTES,
  LAB_DEMO_ANALYTES,
  labCompactPrompt,
  labRow,
  labTaskSplits,
} from "./lib/data/lab_task.ts";

// Rewards
export { lenientGrade } from "./lib/reward/lenient.ts";
export type { LenientGrade } from "./lib/reward/lenient.ts";
export {
  accuracyReward,
  formatReward,
  formatScore,
  medvlthinkerReward,
  medvlthinkerRewardFn,
} from "./lib/reward/medvlthinker.ts";
export type { MedVLThinkerScore } from "./lib/reward/medvlthinker.ts";
export { softFormatReward } from "./lib/reward/soft_format.ts";
export { namedReward } from "./lib/reward/types.ts";
export type { NamedReward, RewardFunction } from "./lib/reward/types.ts";
export { rewardByName } from "./lib/reward/registry.ts";

// Training
export { sftLoss, tokenLogprobs } from "./lib/train/losses.ts";
export { adamw, clipGradNorm, clipScale, valueAndGrads } from "./lib/train/optimizer.ts";
export type { AdamW, AdamWOptions, ValueAndGradsOptions } from "./lib/train/optimizer.ts";
export { lrSchedule } from "./lib/train/schedule.ts";
export { addLora, loadLora, mergeLora, saveLora } from "./lib/model/lora.ts";
export type { LoraOptions } from "./lib/model/lora.ts";
export { resolveSftConfig, sft, SFT_DEFAULTS, sftPromptText } from "./lib/train/sft.ts";
export type { SftOptions, SftResult } from "./lib/train/sft.ts";
export { groupAdvantages, grpoLoss, perTokenLogps } from "./lib/train/grpo_loss.ts";
export type { GrpoBatch, GrpoLossOptions, GrpoLossType } from "./lib/train/grpo_loss.ts";
export {
  epochSampler,
  grpo,
  GRPO_DEFAULTS,
  GRPO_PRESETS,
  MEDVLTHINKER_GRPO,
  resolveGrpoConfig,
} from "./lib/train/grpo.ts";
export type {
  GrpoConfig,
  GrpoDefaultedKey,
  GrpoOptions,
  GrpoResult,
  GrpoStepMetrics,
  PromptSampler,
} from "./lib/train/grpo.ts";
export { describeConfig } from "./lib/train/trainer.ts";
export type { SamplingOptions } from "./lib/engine/sampling.ts";
export type { StepLogger, StepMetrics, TrainResult } from "./lib/train/trainer.ts";
export {
  AdaptiveCurriculum,
  betaMoment,
  CURRICULUM_DEFAULTS,
  curriculumSampler,
  mixedProbability,
} from "./lib/train/curriculum.ts";
export type {
  CurriculumOptions,
  CurriculumSampler,
  CurriculumStats,
  PassRateEstimate,
} from "./lib/train/curriculum.ts";

// Probe, filter, evaluate
export { probe } from "./lib/eval/probe.ts";
export type { ProbeOptions, ProbeRecord } from "./lib/eval/probe.ts";
export { attachProbe, filter, filterWithReport, findOverlap, formatFilterReport } from "./lib/eval/filter.ts";
export type { AttachProbeOptions, FilterOptions, FilterReport } from "./lib/eval/filter.ts";
export { evaluate } from "./lib/eval/evaluate.ts";
export type { EvaluateOptions } from "./lib/eval/evaluate.ts";
export {
  BENCHMARKS,
  PUBLISHED_ACCURACY,
  registerBenchmark,
  resolveBenchmarks,
} from "./lib/eval/benchmarks.ts";
export { compareReports, formatReport } from "./lib/eval/report.ts";
export type { BenchmarkResult, EvalReport, Prediction } from "./lib/eval/report.ts";
export {
  bootstrapMeanCI,
  bootstrapMeanOfMeansCI,
  mean,
  normalInterval,
  pairedBootstrapCI,
  seededRandom,
  wilsonInterval,
} from "./lib/eval/stats.ts";
export type { BootstrapOptions } from "./lib/eval/stats.ts";

// Scale out: remote engines (vLLM, SGLang, `medthink serve`), the server, distillation
export { isCompletionEngine } from "./lib/engine/types.ts";
export { generateCompletions, sampleSeed } from "./lib/engine/generate_batch.ts";
export type { GenerateCompletionsOptions, RowCompletions } from "./lib/engine/generate_batch.ts";
export { visionInputBuilder } from "./lib/engine/vision_inputs.ts";
export { openRowJob } from "./lib/engine/row_job.ts";
export type { RowJob, RowJobOptions, RowJobRunOptions, SampledRowJobOptions } from "./lib/engine/row_job.ts";
export type { VisionInputOptions } from "./lib/engine/vision_inputs.ts";
export { localEngine } from "./lib/engine/local.ts";
export type {
  EngineTokenizer,
  LocalEngine,
  LocalEngineOptions,
  LocalResult,
  LocalSample,
  LocalSampling,
} from "./lib/engine/local.ts";
export { apiBaseUrl, openaiEngine } from "./lib/engine/openai.ts";
export type {
  EndpointStats,
  OpenAIEngine,
  OpenAIEngineOptions,
  ServerProtocol,
} from "./lib/engine/openai.ts";
export { remotePolicy } from "./lib/engine/policy_sync.ts";
export type { RemotePolicyOptions } from "./lib/engine/policy_sync.ts";
export { toWireMessages } from "./lib/engine/messages.ts";
export type { WireMessage } from "./lib/engine/messages.ts";
export { serveModel } from "./lib/serve/server.ts";
export type { ModelServer, ServeOptions } from "./lib/serve/server.ts";
export { distill, extractReasoning } from "./lib/train/distill.ts";
export { BestCheckpoint, validationAccuracy } from "./lib/train/validation.ts";
export type {
  BestRecord,
  ValidationGrader,
  ValidationOptions,
  ValidationResult,
} from "./lib/train/validation.ts";
export { TensorBoardWriter } from "./lib/util/tensorboard.ts";
export type { TensorBoardOptions } from "./lib/util/tensorboard.ts";
export type { DistillOptions, DistillRecord, DistillResult } from "./lib/train/distill.ts";

// Plots
export * as plot from "./lib/eval/plot.ts";

// Types that appear in the signatures above, exported so that the documentation is complete
// (`deno doc --lint mod.ts`).
export type { Table } from "./lib/data/dataset.ts";
export type { ColumnMapping, ImageCheck, SkippedRow } from "./lib/data/dataset.ts";
export type { DecodeImageOptions, ImageContext, RawImage } from "./lib/data/images.ts";
export type { ImageProcessorConfig, PixelImage, ProcessedImages } from "./lib/data/processor.ts";
export type { PromptTemplateFn } from "./lib/data/prompt.ts";
export type { LabAnalyte, LabClass, LabRow, LabSplits, LabTaskOptions } from "./lib/data/lab_task.ts";
export type { DecodeOptions, EncodeBatchOptions, LoadTokenizerOptions } from "./lib/data/tokenizer.ts";
export type { Raw as RawConfig } from "./lib/model/config.ts";
export type { PrefillResult } from "./lib/model/generate.ts";
export type { KVCache } from "./lib/model/kv_cache.ts";
export type { VLRopeIndex, VLRopeIndexOptions } from "./lib/model/qwen25vl.ts";
export type {
  LoadedTensor,
  SafetensorsHeader,
  SaveDtype,
  TensorInfo,
  TensorToWrite,
} from "./lib/model/safetensors.ts";
export type { GradedRow } from "./lib/reward/medvlthinker.ts";
export type { NamedRewardOptions, RewardSpec } from "./lib/reward/types.ts";
export type { AdamWState, AdamWStepOptions, ParamGroup } from "./lib/train/optimizer.ts";
export type { ScheduleOptions, ScheduleType } from "./lib/train/schedule.ts";
export type { SftLossOptions, TokenLogprobs, TokenLogprobsOptions } from "./lib/train/losses.ts";
export type { SftConfig, SftDefaultedKey, SftRow, SftStepMetrics } from "./lib/train/sft.ts";
export type {
  CompletionBatch,
  GroupAdvantagesOptions,
  GrpoLossMetrics,
  PerTokenLogpsOptions,
  ScaleRewards,
} from "./lib/train/grpo_loss.ts";
export type { GrpoDataset, GrpoTokenizer } from "./lib/train/grpo.ts";
export type { ProbeReward } from "./lib/eval/probe.ts";
export type { OverlapMatch, OverlapOptions, OverlapResult } from "./lib/eval/filter.ts";
export type { BenchmarkSpec, GraderName, ResolvedBenchmark, ResolveOptions } from "./lib/eval/benchmarks.ts";
export type { CompareOptions, Comparison } from "./lib/eval/report.ts";
export type { Interval } from "./lib/eval/stats.ts";
export type {
  ChatTokenizer,
  PromptBuilder,
  QuestionRow,
  SamplingOptions as CompletionSamplingOptions,
} from "./lib/engine/generate_batch.ts";
export type { ImageInputBuilder, ImageInputs } from "./lib/engine/vision_inputs.ts";
export type {
  CompletionEngine,
  CompletionRequest,
  CompletionSample,
  EngineSampling,
} from "./lib/engine/types.ts";
export type { RemotePolicy } from "./lib/engine/policy_sync.ts";

// Models and datasets by Hub id, through the Hugging Face cache (lib/hub; owner: hub).
export { hubCacheDir, hubOffline } from "./lib/hub/cache.ts";
export { filterFiles, snapshotDownload } from "./lib/hub/download.ts";
export { resolveModelDir } from "./lib/hub/models.ts";
export { hubDatasetFiles, selectDatasetFiles } from "./lib/hub/datasets.ts";
export { formatHubRef, parseHubRef } from "./lib/hub/resolve.ts";
export { hubEndpoint, hubToken } from "./lib/hub/api.ts";
export type { SnapshotDownloadOptions } from "./lib/hub/download.ts";
export type { ResolveModelOptions } from "./lib/hub/models.ts";
export type { HubDatasetFiles, HubDatasetOptions } from "./lib/hub/datasets.ts";
export type { HubRef } from "./lib/hub/resolve.ts";
