//! LLM presets: parameter counts equal the published model sizes, and MoRAM on every linear
//! layer of Llama-3.1-8B with r = 16 trains 41.9 M parameters per task (protocol 5.4, Table 3).

use moram_models::llm::LlmConfig;

#[test]
fn presets_have_the_published_parameter_counts() -> anyhow::Result<()> {
    assert_eq!(LlmConfig::preset("llama2-7b")?.parameter_count(), 6_738_415_616);
    assert_eq!(LlmConfig::preset("llama3.2-1b")?.parameter_count(), 1_235_814_400);
    assert_eq!(LlmConfig::preset("llama3.1-8b")?.parameter_count(), 8_030_261_248);
    assert_eq!(LlmConfig::preset("gemma-2b")?.parameter_count(), 2_506_172_416);
    // Counted by transformers 4.57.1 on the meta device (tests/fixtures/llm/generate_families.py
    // prints them): 0.49B, 1.54B, 7.61B, 0.6B, 7.24B, 270M and 2.6B as the model cards state.
    assert_eq!(LlmConfig::preset("qwen2.5-0.5b")?.parameter_count(), 494_032_768);
    assert_eq!(LlmConfig::preset("qwen2.5-1.5b")?.parameter_count(), 1_543_714_304);
    assert_eq!(LlmConfig::preset("qwen2.5-7b")?.parameter_count(), 7_615_616_512);
    assert_eq!(LlmConfig::preset("qwen3-0.6b")?.parameter_count(), 596_049_920);
    assert_eq!(LlmConfig::preset("mistral-7b")?.parameter_count(), 7_241_732_096);
    assert_eq!(LlmConfig::preset("gemma3-270m")?.parameter_count(), 268_098_176);
    assert_eq!(LlmConfig::preset("gemma2-2b")?.parameter_count(), 2_614_341_888);
    let err = LlmConfig::preset("llama4").unwrap_err().to_string();
    assert!(err.contains("llama2-7b, llama3.2-1b, llama3.1-8b, gemma-2b"), "{err}");
    Ok(())
}

#[test]
fn moram_on_all_224_linears_of_llama31_8b_is_41_9m_per_task() {
    let c = LlmConfig::llama31_8b();
    let per_block: i64 = c.block_linears().iter().map(|(_, i, o)| 16 * (i + o)).sum();
    assert_eq!(7 * c.num_hidden_layers, 224);
    assert_eq!(per_block * c.num_hidden_layers, 41_943_040);
}

/// Protocol 4.2: TRACE trains q, k, v, o with r = 8 new atoms per task.
#[test]
fn trace_per_task_trainable_counts() -> anyhow::Result<()> {
    for (preset, want) in [("gemma-2b", 1_843_200i64), ("llama2-7b", 8_388_608), ("llama3.2-1b", 1_703_936)] {
        let c = LlmConfig::preset(preset)?;
        let per_block: i64 = c
            .block_linears()
            .iter()
            .filter(|(m, _, _)| ["q_proj", "k_proj", "v_proj", "o_proj"].contains(m))
            .map(|(_, i, o)| 8 * (i + o))
            .sum();
        assert_eq!(per_block * c.num_hidden_layers, want, "{preset}");
    }
    Ok(())
}
