{{/* ---- The final transcript (finalTranscript in values.yaml) ------------------------------ */}}

{{/*
Every setting the Celery worker opens, launches and retries final transcript passes with
(functions/worker/finals.py) and builds their Jobs from (orchestrator/job_spec.py): FINAL_*,
and how the live transcription decodes (transcription.computeType, .beamSize, .batchSize), which
the pass decodes with too. FINAL_MODEL is finalTranscript.model, or else transcription.model: the
live model, which the worker would otherwise not know (it has no WHISPER_MODEL). FINAL_IMAGE is the
transcription image. The rest a pass gets from the worker's own environment: DATABASE_URL, the
recording storage and its credentials (vexa.recordingStorageEnv), LOG_LEVEL. Only the worker gets
these: beat only schedules the passes.
*/}}
{{- define "vexa.finalTranscriptEnv" -}}
{{- $f := .Values.finalTranscript -}}
{{- $t := .Values.transcription -}}
{{- $liveEngine := include "vexa.transcriptionEngine" . -}}
{{- if and (eq $f.engine "whisperx") (ne $liveEngine "whisperx") -}}
{{- fail (printf "finalTranscript.engine is whisperx, but the transcription image (that of the engine %s, transcription.engine) has no whisperx: use faster-whisper, or transcription.engine: whisperx (or device: cuda), whose image has it" $liveEngine) -}}
{{- end -}}
{{- if and $f.enabled (eq $f.device "cuda") (ne $liveEngine "whisperx") -}}
{{- fail (printf "finalTranscript.device is cuda, but the passes run in the transcription image of the engine %s (transcription.engine), which has no CUDA libraries (cuBLAS, cuDNN) to run on a GPU: set transcription.engine to whisperx (its image has them), or finalTranscript.device: cpu" $liveEngine) -}}
{{- end -}}
{{- $model := $f.model | default $t.model -}}
{{- $liveMultilingual := and $t.model (not (hasSuffix ".en" (lower $t.model))) -}}
{{- if and $f.enabled (hasSuffix ".en" (lower $model)) $liveMultilingual -}}
{{- fail (printf "finalTranscript.model (%s) is English-only, but the live model (transcription.model: %s) is not: meetings in other languages would get an English final transcript. Give a multilingual finalTranscript.model" $model $t.model) -}}
{{- end -}}
- name: FINAL_TRANSCRIPTS
  value: {{ ternary "1" "0" $f.enabled | quote }}
- name: FINAL_ENGINE
  value: {{ $f.engine | quote }}
- name: FINAL_MODEL
  value: {{ $model | quote }}
- name: FINAL_DEVICE
  value: {{ $f.device | quote }}
- name: FINAL_CPU_THREADS
  value: {{ int $f.cpuThreads | quote }}
- name: FINAL_ATTEMPTS
  value: {{ int $f.attempts | quote }}
- name: FINAL_TIMEOUT_SECONDS
  value: {{ toString $f.timeoutSeconds | quote }}
- name: FINAL_RECORDING_WAIT_SECONDS
  value: {{ toString $f.recordingWaitSeconds | quote }}
- name: FINAL_IMAGE
  value: {{ include "vexa.transcriptionImage" . | quote }}
- name: FINAL_SERVICE_ACCOUNT
  value: {{ include "vexa.finalServiceAccountName" . | quote }}
- name: FINAL_CPU_REQUEST
  value: {{ toString $f.resources.requests.cpu | quote }}
- name: FINAL_MEMORY_REQUEST
  value: {{ toString $f.resources.requests.memory | quote }}
- name: FINAL_MEMORY_LIMIT
  value: {{ toString $f.resources.limits.memory | quote }}
- name: FINAL_GPUS
  value: {{ int $f.gpus | quote }}
- name: FINAL_NODE_SELECTOR
  value: {{ include "vexa.nodeSelectorSetting" $f.nodeSelector | quote }}
- name: FINAL_TOLERATIONS
  value: {{ include "vexa.tolerationsSetting" $f.tolerations | quote }}
- name: WHISPER_COMPUTE_TYPE
  value: {{ $t.computeType | quote }}
- name: WHISPER_BEAM_SIZE
  value: {{ int $t.beamSize | quote }}
- name: WHISPER_BATCH_SIZE
  value: {{ int $t.batchSize | quote }}
{{- end -}}

{{/* The final passes' pods, as the worker's code labels their Jobs (job_spec.APP_LABELS). */}}
{{- define "vexa.finalPassSelector" -}}
matchLabels:
  app: final-pass
{{- end -}}
