//! Ready-made [`Learner`](crate::Learner)s: X-TAIL on CLIP ([`clip`]) and TRACE-style
//! instruction tasks on decoder LLMs ([`llm`]).

pub mod clip;
pub mod llm;
