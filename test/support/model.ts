/** The committed default model, which integration tests load through the real engine. */
export const defaultModelDir = process.env.SANFANG_TEST_MODEL_DIR ?? 'models/sanfang-moe-v0';
