{{/*
Helpers shared by every template. Names that other files refer to are fixed:
the Knative Services gateway, bot-manager and transcription and the Broker
(named in knative/*.yaml), and the bots' ServiceAccount vexa-bot (named in the
bot Jobs the Celery worker creates). So: one release per namespace. Everything
else is prefixed with the release's full name.
*/}}

{{- define "vexa.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels that select one component's pods. Call with (dict "root" $ "component" "gateway"). */}}
{{- define "vexa.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every object's labels. Call with (dict "root" $ "component" "gateway"). */}}
{{- define "vexa.labels" -}}
{{ include "vexa.selectorLabels" . }}
app.kubernetes.io/part-of: vexa
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* A Vexa image: (list $ "gateway") -> <registry>/vexa-gateway:<tag or appVersion>. */}}
{{- define "vexa.image" -}}
{{- $root := index . 0 -}}
{{- printf "%s/vexa-%s:%s" (trimSuffix "/" $root.Values.image.registry) (index . 1) ($root.Values.image.tag | default $root.Chart.AppVersion) -}}
{{- end -}}

{{/* The in-cluster base URL of a Knative Service of this release: (list $ "bot-manager"). */}}
{{- define "vexa.serviceUrl" -}}
{{- $root := index . 0 -}}
{{- printf "http://%s.%s.svc.%s" (index . 1) $root.Release.Namespace $root.Values.clusterDomain -}}
{{- end -}}

{{/*
Hardening for every container: no root, no privilege escalation, no
capabilities, the runtime's default seccomp profile and a read-only root
filesystem (writable scratch space is an emptyDir on /tmp). It is all set on the
container because Knative only accepts these fields there by default.
Call with (dict "runAsUser" 10001 "runAsGroup" 10001).
*/}}
{{- define "vexa.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ int .runAsUser }}
runAsGroup: {{ int .runAsGroup }}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Pod-level security for plain Deployments/StatefulSets/Jobs; fsGroup makes volumes writable. */}}
{{- define "vexa.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ int .runAsUser }}
runAsGroup: {{ int .runAsGroup }}
fsGroup: {{ int .runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* imagePullSecrets of a pod spec, or nothing; include with nindent at the pod spec's level. */}}
{{- define "vexa.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets -}}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* ---- Data services ---------------------------------------------------------------- */}}

{{- define "vexa.postgresqlName" -}}{{ include "vexa.fullname" . }}-postgresql{{- end -}}
{{- define "vexa.redisName" -}}{{ include "vexa.fullname" . }}-redis{{- end -}}

{{/* Secret and key holding DATABASE_URL: the generated one, or the operator's own. */}}
{{- define "vexa.databaseSecretName" -}}
{{- if .Values.postgresql.enabled -}}
{{- include "vexa.postgresqlName" . -}}
{{- else -}}
{{- required "postgresql.enabled is false: set externalDatabase.existingSecret to a Secret holding DATABASE_URL" .Values.externalDatabase.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "vexa.databaseSecretKey" -}}
{{- if .Values.postgresql.enabled -}}database-url{{- else -}}{{ .Values.externalDatabase.existingSecretKey }}{{- end -}}
{{- end -}}

{{- define "vexa.databaseUrlEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "vexa.databaseSecretName" . }}
      key: {{ include "vexa.databaseSecretKey" . }}
{{- end -}}

{{/* REDIS_URL: from the generated Secret, the operator's Secret, or a plain URL. */}}
{{- define "vexa.redisUrlEnv" -}}
- name: REDIS_URL
{{- if .Values.redis.enabled }}
  valueFrom:
    secretKeyRef:
      name: {{ include "vexa.redisName" . }}
      key: redis-url
{{- else if .Values.externalRedis.existingSecret }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalRedis.existingSecret }}
      key: {{ .Values.externalRedis.existingSecretKey }}
{{- else }}
  value: {{ required "redis.enabled is false: set externalRedis.url or externalRedis.existingSecret" .Values.externalRedis.url | quote }}
{{- end }}
{{- end -}}

{{/*
A password (or token) that survives upgrades: the one already in the Secret if
the cluster has it (lookup), a new random one otherwise. Offline renders (helm
template, lint) have no cluster and always get a new one.
Call with (dict "root" $ "secret" NAME "key" KEY).
*/}}
{{- define "vexa.stablePassword" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else -}}
{{- randAlphaNum 32 -}}
{{- end -}}
{{- end -}}

{{/* ---- The admin API's token ------------------------------------------------------------ */}}

{{/* Secret and key holding ADMIN_TOKEN: the operator's own (admin.existingSecret), or the generated one. */}}
{{- define "vexa.adminSecretName" -}}
{{- .Values.admin.existingSecret | default (printf "%s-admin" (include "vexa.fullname" .)) -}}
{{- end -}}

{{- define "vexa.adminSecretKey" -}}
{{- if .Values.admin.existingSecret -}}{{ .Values.admin.existingSecretKey }}{{- else -}}admin-token{{- end -}}
{{- end -}}

{{/* ADMIN_TOKEN, always from a Secret; nothing at all when admin.enabled is false (the admin API is off). */}}
{{- define "vexa.adminTokenEnv" -}}
{{- if .Values.admin.enabled -}}
- name: ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "vexa.adminSecretName" . }}
      key: {{ include "vexa.adminSecretKey" . }}
{{- end -}}
{{- end -}}

{{/* ---- Secrets the services share: EVENT_SIGNING_KEY and SERVICE_TOKEN ----------------- */}}

{{/* The Secret holding both: the operator's own (internalSecrets.existingSecret), or the generated one. */}}
{{- define "vexa.internalSecretName" -}}
{{- .Values.internalSecrets.existingSecret | default (printf "%s-internal" (include "vexa.fullname" .)) -}}
{{- end -}}

{{/*
The key holding one of them, (list $ "eventSigningKey") or (list $ "serviceToken"): the
operator's (internalSecrets.<which>.existingSecretKey), or the generated Secret's.
*/}}
{{- define "vexa.internalSecretKey" -}}
{{- $root := index . 0 -}}
{{- $which := index . 1 -}}
{{- if $root.Values.internalSecrets.existingSecret -}}
{{- (index $root.Values.internalSecrets $which).existingSecretKey -}}
{{- else -}}
{{- get (dict "eventSigningKey" "event-signing-key" "serviceToken" "service-token") $which -}}
{{- end -}}
{{- end -}}

{{/* One of them as an env entry, always from the Secret: (list $ "EVENT_SIGNING_KEY" "eventSigningKey"). */}}
{{- define "vexa.internalSecretEnv" -}}
{{- $root := index . 0 -}}
- name: {{ index . 1 }}
  valueFrom:
    secretKeyRef:
      name: {{ include "vexa.internalSecretName" $root }}
      key: {{ include "vexa.internalSecretKey" (list $root (index . 2)) }}
{{- end -}}

{{/*
EVENT_SIGNING_KEY: the worker (it derives each bot session's key and gives the bot only that),
bot-manager (it checks bots' events and transcription's replies) and transcription (it checks
audio chunks and signs its replies). Not the gateway, the webhook workers, beat or bots.
*/}}
{{- define "vexa.eventSigningKeyEnv" -}}
{{ include "vexa.internalSecretEnv" (list . "EVENT_SIGNING_KEY" "eventSigningKey") }}
{{- end -}}

{{/* SERVICE_TOKEN: the gateway sends it with every call it forwards, bot-manager requires it. No one else. */}}
{{- define "vexa.serviceTokenEnv" -}}
{{ include "vexa.internalSecretEnv" (list . "SERVICE_TOKEN" "serviceToken") }}
{{- end -}}

{{/* ---- Knative Eventing: the routing in knative/*.yaml ------------------------------- */}}

{{/*
Every Broker and Trigger in files/knative/*.yaml, as JSON {"resources": [...]}.
files/knative is a symlink to the repository's knative/ folder, the one the
local broker reads, so cluster and laptop route events from the same files.
Files are read in name order, as the local broker does.
*/}}
{{- define "vexa.knativeResources" -}}
{{- $resources := list -}}
{{- range $path, $_ := .Files.Glob "files/knative/*.yaml" -}}
{{- range $document := regexSplit "(?m)^---[ \\t]*$" ($.Files.Get $path) -1 -}}
{{- $resource := fromYaml $document -}}
{{- if hasKey $resource "Error" -}}
{{- fail (printf "%s is not valid YAML: %s" $path $resource.Error) -}}
{{- end -}}
{{- if $resource -}}
{{- $resources = append $resources $resource -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if not $resources -}}
{{- fail "files/knative/*.yaml holds no Broker or Trigger: the chart must be built from a checkout where helm/vexa/files/knative links to knative/" -}}
{{- end -}}
{{- toJson (dict "resources" $resources) -}}
{{- end -}}

{{/* The name of the one Broker in knative/*.yaml. */}}
{{- define "vexa.brokerName" -}}
{{- $brokers := list -}}
{{- range (include "vexa.knativeResources" . | fromJson).resources -}}
{{- if eq .kind "Broker" }}{{ $brokers = append $brokers .metadata.name }}{{ end -}}
{{- end -}}
{{- if ne (len $brokers) 1 -}}
{{- fail (printf "knative/*.yaml must define exactly one Broker, found %d" (len $brokers)) -}}
{{- end -}}
{{- first $brokers -}}
{{- end -}}

{{/*
The Broker's class: the one its file in knative/ names, else eventing.brokerClass. The chart knows
the config and the ingress of two classes (eventing.yaml, vexa.brokerIngressUrl).
*/}}
{{- define "vexa.brokerClass" -}}
{{- $class := .Values.eventing.brokerClass -}}
{{- range (include "vexa.knativeResources" . | fromJson).resources -}}
{{- if eq .kind "Broker" }}{{ $class = dig "metadata" "annotations" "eventing.knative.dev/broker.class" $class . }}{{ end -}}
{{- end -}}
{{- if not (has $class (list "MTChannelBasedBroker" "Kafka")) -}}
{{- fail (printf "knative/*.yaml: the Broker's class is %q; the chart configures MTChannelBasedBroker and Kafka only" $class) -}}
{{- end -}}
{{- $class -}}
{{- end -}}

{{/*
The ingress of the Broker's class, BROKER_INGRESS_URL: where the worker publishes public events, and
the bots' K_SINK while the worker cannot read the address the Broker announces. Both classes take
events at /<namespace>/<broker> of a Service in knative-eventing: the multi-tenant channel-based
broker's broker-ingress, the Kafka broker's kafka-broker-ingress.
*/}}
{{- define "vexa.brokerIngressUrl" -}}
{{- $service := get (dict "MTChannelBasedBroker" "broker-ingress" "Kafka" "kafka-broker-ingress") (include "vexa.brokerClass" .) -}}
{{- .Values.eventing.brokerIngressUrl | default (printf "http://%s.knative-eventing.svc.%s/%s/%s" $service .Values.clusterDomain .Release.Namespace (include "vexa.brokerName" .)) -}}
{{- end -}}

{{/*
The pods of the Broker's ingress, which bots send their events to (their NetworkPolicy):
networkPolicy.broker.podSelector where set, else those of the Broker's class, so that a change of
class needs no second setting. The multi-tenant channel-based broker's mt-broker-ingress pods carry
eventing.knative.dev/brokerRole: ingress; the Kafka broker's receiver pods, app: kafka-broker-receiver
(knative-extensions/eventing-kafka-broker, data-plane/config/broker/500-receiver.yaml, whose
Deployment also listens on 8080 and 8443). Their namespace is networkPolicy.broker.namespaceSelector's.
*/}}
{{- define "vexa.brokerIngressPodSelector" -}}
{{- $selector := .Values.networkPolicy.broker.podSelector -}}
{{- if not (kindIs "map" $selector) -}}
{{- $labels := get (dict "MTChannelBasedBroker" (dict "eventing.knative.dev/brokerRole" "ingress") "Kafka" (dict "app" "kafka-broker-receiver")) (include "vexa.brokerClass" .) -}}
{{- $selector = dict "matchLabels" $labels -}}
{{- end -}}
{{- toYaml $selector -}}
{{- end -}}

{{/* The ConfigMap of the Kafka broker's settings (eventing.kafka), the Broker's spec.config with brokerClass Kafka. */}}
{{- define "vexa.kafkaBrokerConfigName" -}}{{ include "vexa.fullname" . }}-kafka-broker{{- end -}}

{{/*
The Broker's OIDC audience, which a sender's token must be issued for: what the Broker announces
in status.address.audience, `<group>/<kind>/<namespace>/<name>` lowercased (knative/eventing
pkg/auth/audience.go GetAudience, set by pkg/reconciler/broker; e.g.
eventing.knative.dev/broker/<namespace>/default in
https://knative.dev/docs/eventing/features/sender-identity/).
*/}}
{{- define "vexa.brokerAudience" -}}
{{- printf "eventing.knative.dev/broker/%s/%s" .Release.Namespace (include "vexa.brokerName" .) | lower -}}
{{- end -}}

{{/* ---- Knative Eventing: who may send what (eventpolicy.yaml) ----------------------------- */}}

{{/*
The public event types, functions/common/events.py's PublicEventType: the worker's webhook pump
publishes them for users' own Triggers. Vexa routes none of them, so knative/ cannot name them;
tests/chart/test_event_policy.py keeps this list in step with the code.
*/}}
{{- define "vexa.publicEventTypes" -}}
{{- list "io.vexa.meeting.status.v1" "io.vexa.meeting.completed.v1" "io.vexa.meeting.failed.v1" "io.vexa.transcript.stored.v1" "io.vexa.transcript.speakers.v1" | toJson -}}
{{- end -}}

{{/*
Who sends which event type into the Broker, as JSON {"bot": [...], "requests": [...],
"replies": {"<trigger>": [...]}, "public": [...]}. The routed types come from knative/*.yaml, the
one place the chart names them: each Trigger's filter type, sent by whom its vexa.io/sent-by
annotation says (`bot`, `requests` or `reply:<trigger>`). A type has one sender.
*/}}
{{- define "vexa.eventSenders" -}}
{{- $triggers := list -}}
{{- range (include "vexa.knativeResources" . | fromJson).resources -}}
{{- if eq .kind "Trigger" }}{{ $triggers = append $triggers . }}{{ end -}}
{{- end -}}
{{- $names := dict -}}
{{- range $triggers }}{{ $_ := set $names .metadata.name true }}{{ end -}}
{{- $senders := dict "bot" (list) "requests" (list) "replies" (dict) "public" (include "vexa.publicEventTypes" . | fromJsonArray) -}}
{{- $sentBy := dict -}}
{{- range $senders.public }}{{ $_ := set $sentBy . "the worker (public events)" }}{{ end -}}
{{- range $triggers -}}
{{- $name := .metadata.name -}}
{{- $type := ((.spec.filter | default dict).attributes | default dict).type | default "" -}}
{{- $sender := index (.metadata.annotations | default dict) "vexa.io/sent-by" | default "" -}}
{{- if not $type -}}
{{- fail (printf "knative/*.yaml: Trigger %q filters on no type, so eventPolicy cannot tell what its sender may send" $name) -}}
{{- end -}}
{{- if and (hasKey $sentBy $type) (ne (get $sentBy $type) $sender) -}}
{{- fail (printf "knative/*.yaml: %s is sent by %s and, says Trigger %q, by %s: a type has one sender" $type (get $sentBy $type) $name $sender) -}}
{{- end -}}
{{- $_ := set $sentBy $type $sender -}}
{{- if or (eq $sender "bot") (eq $sender "requests") -}}
{{- $_ := set $senders $sender (append (get $senders $sender) $type | uniq) -}}
{{- else if and (hasPrefix "reply:" $sender) (hasKey $names (trimPrefix "reply:" $sender)) -}}
{{- $to := trimPrefix "reply:" $sender -}}
{{- $_ := set $senders.replies $to (append (get $senders.replies $to | default (list)) $type | uniq) -}}
{{- else -}}
{{- fail (printf "knative/*.yaml: Trigger %q: vexa.io/sent-by is %q, not bot, requests or reply:<a Trigger in knative/>" $name $sender) -}}
{{- end -}}
{{- end -}}
{{- toJson $senders -}}
{{- end -}}

{{/*
The OIDC subject Knative Eventing gives a Trigger of this release, the ServiceAccount it
creates for it: kmeta.ChildName(name, "-oidc-<group>-<kind>"), lowercased (knative/eventing
pkg/auth/serviceaccount.go). A name longer than 63 characters Knative hashes (md5, which Helm lacks):
then "<its first 31 characters>*", what every such name starts with.
Call with (dict "root" $ "name" "bot-manager-bot-status" "suffix" "-oidc-eventing.knative.dev-trigger").
*/}}
{{- define "vexa.oidcSubject" -}}
{{- $name := printf "%s%s" .name .suffix | lower -}}
{{- if gt (len $name) 63 }}{{ $name = printf "%s*" (.name | lower | trunc 31) }}{{ end -}}
system:serviceaccount:{{ .root.Release.Namespace }}:{{ $name }}
{{- end -}}

{{/* An EventPolicy's `to`: this release's Broker only (an empty `to` would cover every addressable of the namespace). */}}
{{- define "vexa.eventPolicyTarget" -}}
to:
  - ref:
      apiVersion: eventing.knative.dev/v1
      kind: Broker
      name: {{ include "vexa.brokerName" . }}
{{- end -}}

{{/* An EventPolicy's `filters`: events of these types only. Call with the list of types. */}}
{{- define "vexa.eventPolicyFilters" -}}
{{- if not . }}{{ fail "an EventPolicy would allow no event type: knative/*.yaml names none for its sender" }}{{ end -}}
filters:
  # Every filter of a policy must hold: one, true for any of these types.
  - any:
      {{- range . }}
      - exact:
          type: {{ . | quote }}
      {{- end }}
{{- end -}}

{{/* ---- Knative Services ---------------------------------------------------------------- */}}

{{/*
The live transcription's engine: transcription.engine, or, left empty, whisperx (batched decoding)
where a GPU is asked for (device: cuda) and faster-whisper on CPUs.
*/}}
{{- define "vexa.transcriptionEngine" -}}
{{- $t := .Values.transcription -}}
{{- /*
faster-whisper's image has no CUDA libraries: CTranslate2 loads cuBLAS and cuDNN at run time, and
only whisperx's image brings them (torch's nvidia-* packages; the Dockerfile's transcription-wheels).
On a GPU it would fail at the first chunk, so refuse it here.
*/ -}}
{{- if and (eq $t.device "cuda") (eq $t.engine "faster-whisper") -}}
{{- fail "transcription.device is cuda, but transcription.engine is faster-whisper, whose image (vexa-transcription) has no CUDA libraries (cuBLAS, cuDNN) to run on a GPU: set transcription.engine to whisperx or leave it empty (with device cuda that is whisperx, in vexa-transcription-whisperx), or use transcription.device: cpu" -}}
{{- end -}}
{{- $t.engine | default (ternary "whisperx" "faster-whisper" (eq $t.device "cuda")) -}}
{{- end -}}

{{/*
The image built with that engine (make images ENGINE=...), which the transcription Service and the
final passes run: vexa-transcription (faster-whisper, no torch) or vexa-transcription-whisperx
(CUDA torch, the one with CUDA's libraries).
*/}}
{{- define "vexa.transcriptionImage" -}}
{{- include "vexa.image" (list . (ternary "transcription-whisperx" "transcription" (eq (include "vexa.transcriptionEngine" .) "whisperx"))) -}}
{{- end -}}

{{/*
One Vexa HTTP service as a Knative Service running gunicorn. Call with
(dict "root" $ "name" "bot-manager" "package" "bot_manager" "config" .Values.botManager
      "public" false "containerConcurrency" 0 "workers" 2 "env" (include ... ) "serviceAccount" "")
and, optionally, "image" (default: vexa.image of the name).
The config's workerClass picks gunicorn's worker: gthread (the default: `threads` request
threads per process) or gevent (one thread; up to workerConnections greenlets per process, for
long-lived streams). A config may also set Knative's responseStartTimeoutSeconds and
idleTimeoutSeconds (0: no such timer); both must be at most timeoutSeconds.
*/}}
{{- define "vexa.knativeService" -}}
{{- $root := .root -}}
{{- $c := .config -}}
{{- $scale := $c.autoscaling -}}
{{- $workerClass := $c.workerClass | default "gthread" -}}
{{- if gt (int $scale.minScale) (int $scale.maxScale) -}}
{{- fail (printf "%s: autoscaling.minScale (%d) is above autoscaling.maxScale (%d)" .name (int $scale.minScale) (int $scale.maxScale)) -}}
{{- end -}}
{{- range $timer := list "responseStartTimeoutSeconds" "idleTimeoutSeconds" -}}
{{- if and (hasKey $c $timer) (gt (int (index $c $timer)) (int $c.timeoutSeconds)) -}}
{{- fail (printf "%s: %s (%d) is above timeoutSeconds (%d), the longest a request may last" $.name $timer (int (index $c $timer)) (int $c.timeoutSeconds)) -}}
{{- end -}}
{{- end -}}
{{- if and (eq $workerClass "gevent") (gt (int $scale.target) (mul (int .workers) (int $c.workerConnections))) -}}
{{- fail (printf "%s: autoscaling.target (%d) is above what a pod holds at all, workers x workerConnections (%d)" .name (int $scale.target) (mul (int .workers) (int $c.workerConnections))) -}}
{{- end -}}
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: {{ .name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "vexa.labels" (dict "root" $root "component" .name) | nindent 4 }}
    {{- if not .public }}
    # No public route: reachable only inside the cluster (the broker, the gateway).
    networking.knative.dev/visibility: cluster-local
    {{- end }}
spec:
  template:
    metadata:
      labels:
        {{- include "vexa.selectorLabels" (dict "root" $root "component" .name) | nindent 8 }}
      annotations:
        # The Knative Pod Autoscaler, scaling on in-flight requests per pod.
        autoscaling.knative.dev/class: kpa.autoscaling.knative.dev
        autoscaling.knative.dev/metric: concurrency
        autoscaling.knative.dev/target: {{ int $scale.target | quote }}
        autoscaling.knative.dev/min-scale: {{ int $scale.minScale | quote }}
        autoscaling.knative.dev/max-scale: {{ int $scale.maxScale | quote }}
        # How long the last pod stays once the autoscaler has decided to scale to zero: a request
        # within it finds a warm pod instead of a cold start.
        autoscaling.knative.dev/scale-to-zero-pod-retention-period: {{ $scale.scaleToZeroPodRetentionPeriod | quote }}
        # How long a revision's pods may take to become ready (node, image pull, imports and model
        # load) before Knative marks the revision failed.
        serving.knative.dev/progress-deadline: {{ $c.progressDeadline | quote }}
    spec:
      containerConcurrency: {{ int .containerConcurrency }}
      # The longest a request may last (streams included); Knative refuses more than its
      # max-revision-timeout-seconds (600 by default) and makes it the pods' termination grace period.
      timeoutSeconds: {{ int $c.timeoutSeconds }}
      {{- if hasKey $c "responseStartTimeoutSeconds" }}
      responseStartTimeoutSeconds: {{ int $c.responseStartTimeoutSeconds }}
      {{- end }}
      {{- if hasKey $c "idleTimeoutSeconds" }}
      idleTimeoutSeconds: {{ int $c.idleTimeoutSeconds }}
      {{- end }}
      {{- if .serviceAccount }}
      serviceAccountName: {{ .serviceAccount }}
      {{- else }}
      # This service never talks to the Kubernetes API.
      automountServiceAccountToken: false
      {{- end }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- range . }}
        - name: {{ . }}
        {{- end }}
      {{- end }}
      {{- with $c.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .name }}
          image: {{ .image | default (include "vexa.image" (list $root .name)) }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command:
            - gunicorn
            - -c
            - python:functions.common.gunicorn_conf
            - --worker-class
            - {{ $workerClass }}
            - --workers
            - {{ int .workers | quote }}
            {{- if eq $workerClass "gevent" }}
            # Every request and open stream is a greenlet: one thread, this many per process.
            - --threads
            - "1"
            - --worker-connections
            - {{ int $c.workerConnections | quote }}
            {{- else }}
            - --threads
            - {{ int .threads | quote }}
            {{- end }}
            - functions.{{ .package }}:create_app()
          ports:
            # Knative sets PORT to this; gunicorn_conf binds to PORT.
            - name: http1
              containerPort: 8080
          env:
            - name: GUNICORN_TIMEOUT
              {{- if eq $workerClass "gevent" }}
              # gevent: a worker is killed only when its event loop has not run for this long (its
              # heartbeat goes every second, whatever its requests do), never for a long request.
              value: {{ int $c.workerTimeoutSeconds | quote }}
              {{- else }}
              # gthread: as long as Knative waits for a request. (gthread's main thread beats every
              # second too; the margin also covers a slow start, transcription loading its model.)
              value: {{ int $c.timeoutSeconds | quote }}
              {{- end }}
            # /metrics adds up every gunicorn worker of the pod.
            - name: PROMETHEUS_MULTIPROC_DIR
              value: /run/metrics
            - name: LOG_LEVEL
              value: {{ $root.Values.settings.logLevel | quote }}
            {{- .env | nindent 12 }}
          resources:
            {{- toYaml $c.resources | nindent 12 }}
          # Every probe asks /livez, which answers as long as the process does and checks no
          # dependency: an outage of the database or bot-manager, which every pod shares, must
          # neither restart every pod nor take them all out of service (why, for a service's own
          # database too: install in functions/common/web.py). /healthz, which checks them, is
          # for operators. The startup probe covers slow starts (transcription loads its model
          # before serving); readiness takes a pod that stops answering out of service after
          # 30 s, liveness restarts it after a minute.
          startupProbe:
            httpGet:
              path: /livez
              port: 8080
            periodSeconds: 5
            timeoutSeconds: 5
            failureThreshold: 60
          readinessProbe:
            httpGet:
              path: /livez
              port: 8080
            periodSeconds: 10
            timeoutSeconds: 5
          livenessProbe:
            httpGet:
              path: /livez
              port: 8080
            periodSeconds: 15
            timeoutSeconds: 5
            failureThreshold: 4
          securityContext:
            {{- include "vexa.containerSecurityContext" $root.Values | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            - name: metrics
              mountPath: /run/metrics
      volumes:
        # The only writable places: scratch space (gunicorn's worker heartbeats,
        # library caches) and the per-worker metric files, which must exist at start.
        - name: tmp
          emptyDir: {}
        - name: metrics
          emptyDir: {}
{{- end -}}

{{/* ---- Bots: what the Celery worker needs to build, launch and relaunch their Jobs ----- */}}

{{/*
The bots' ServiceAccount: a fixed name, like the Knative Services', created in
rbac.yaml and named in every bot Job (BOT_SERVICE_ACCOUNT).
*/}}
{{- define "vexa.botServiceAccountName" -}}vexa-bot{{- end -}}

{{/* The final transcript passes' ServiceAccount (rbac.yaml), named in their Jobs (FINAL_SERVICE_ACCOUNT). */}}
{{- define "vexa.finalServiceAccountName" -}}vexa-final-pass{{- end -}}

{{/* The kubernetes orchestrator: bot Jobs go to the release's namespace. */}}
{{- define "vexa.orchestratorEnv" -}}
- name: ORCHESTRATOR
  value: kubernetes
- name: KUBERNETES_NAMESPACE
  value: {{ .Release.Namespace | quote }}
{{- end -}}

{{/*
Every setting the Celery worker builds a bot's Job from (meetings.bot_spec and
orchestrator/job_spec.py), plus the reconciler's relaunch policy. Only the worker
gets these: bot-manager never talks to the Kubernetes API, beat only schedules.
Integer settings go through int, so that a large number is never written as 1e+06.
*/}}
{{- define "vexa.botEnv" -}}
{{- $b := .Values.bot -}}
{{ include "vexa.orchestratorEnv" . }}
- name: BOT_SERVICE_ACCOUNT
  value: {{ include "vexa.botServiceAccountName" . | quote }}
- name: BOT_IMAGE
  value: {{ include "vexa.image" (list . "bot") | quote }}
- name: BROKER_INGRESS_URL
  value: {{ include "vexa.brokerIngressUrl" . | quote }}
- name: BROKER_NAME
  value: {{ include "vexa.brokerName" . | quote }}
- name: BOT_CPU_REQUEST
  value: {{ toString $b.resources.requests.cpu | quote }}
- name: BOT_CPU_LIMIT
  value: {{ toString $b.resources.limits.cpu | quote }}
- name: BOT_MEMORY_REQUEST
  value: {{ toString $b.resources.requests.memory | quote }}
- name: BOT_MEMORY_LIMIT
  value: {{ toString $b.resources.limits.memory | quote }}
- name: BROWSER_BOT_CPU_REQUEST
  value: {{ toString $b.browserResources.requests.cpu | quote }}
- name: BROWSER_BOT_CPU_LIMIT
  value: {{ toString $b.browserResources.limits.cpu | quote }}
- name: BROWSER_BOT_MEMORY_REQUEST
  value: {{ toString $b.browserResources.requests.memory | quote }}
- name: BROWSER_BOT_MEMORY_LIMIT
  value: {{ toString $b.browserResources.limits.memory | quote }}
- name: MAX_MEETING_SECONDS
  value: {{ int $b.maxMeetingSeconds | quote }}
- name: BOT_JOB_TTL_SECONDS
  value: {{ int $b.jobTtlSeconds | quote }}
- name: BOT_HEARTBEAT_SECONDS
  value: {{ toString $b.heartbeatSeconds | quote }}
- name: BOT_BUFFER_CHUNKS
  value: {{ int $b.bufferChunks | quote }}
- name: BOT_DRAIN_SECONDS
  value: {{ toString $b.drainSeconds | quote }}
- name: CHUNK_MIN_SECONDS
  value: {{ toString $b.chunkMinSeconds | quote }}
- name: CHUNK_MAX_SECONDS
  value: {{ toString $b.chunkMaxSeconds | quote }}
- name: CHUNK_PAUSE_MS
  value: {{ int $b.chunkPauseMs | quote }}
- name: DRAFT_INTERVAL_SECONDS
  value: {{ toString $b.draftIntervalSeconds | quote }}
- name: VAD_AGGRESSIVENESS
  value: {{ int $b.vadAggressiveness | quote }}
- name: BOT_RELAUNCH_LIMIT
  value: {{ int $b.relaunchLimit | quote }}
- name: BOT_RELAUNCH_BACKOFF_SECONDS
  value: {{ toString $b.relaunchBackoffSeconds | quote }}
- name: LAUNCH_TIMEOUT_SECONDS
  value: {{ toString $b.launchTimeoutSeconds | quote }}
- name: RECORDING_SOURCES
  value: {{ .Values.settings.recordingSources | quote }}
- name: BOT_DISPLAY_NAME
  value: {{ $b.displayName | quote }}
- name: BOT_WAITING_ROOM_TIMEOUT_SECONDS
  value: {{ toString $b.waitingRoomTimeoutSeconds | quote }}
- name: BOT_NO_ONE_JOINED_TIMEOUT_SECONDS
  value: {{ toString $b.noOneJoinedTimeoutSeconds | quote }}
- name: BOT_EVERYONE_LEFT_TIMEOUT_SECONDS
  value: {{ toString $b.everyoneLeftTimeoutSeconds | quote }}
- name: BOT_SILENCE_TIMEOUT_SECONDS
  value: {{ toString $b.silenceTimeoutSeconds | quote }}
- name: BOT_JOIN_STEP_SECONDS
  value: {{ toString $b.joinStepSeconds | quote }}
- name: CHROMIUM_PATH
  value: {{ $b.chromiumPath | quote }}
- name: BOT_BROWSER_HOST_RULES
  value: {{ $b.browserHostRules | quote }}
- name: BOT_PLATFORMS_DIR
  value: {{ $b.platformsDir | quote }}
- name: BOT_NODE_SELECTOR
  value: {{ include "vexa.nodeSelectorSetting" $b.nodeSelector | quote }}
- name: BOT_TOLERATIONS
  value: {{ include "vexa.tolerationsSetting" $b.tolerations | quote }}
{{- end -}}

{{/*
Where the worker's Jobs run, as the settings it reads (BOT_* and FINAL_*; job_spec.placement):
a node selector map as key=value,key=value (sorted), tolerations as a JSON list (empty: none).
*/}}
{{- define "vexa.nodeSelectorSetting" -}}
{{- $pairs := list -}}
{{- range $key := keys . | sortAlpha -}}
{{- $pairs = append $pairs (printf "%s=%s" $key (index $ $key)) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{- define "vexa.tolerationsSetting" -}}
{{- ternary (toJson .) "" (not (empty .)) -}}
{{- end -}}

{{/* ---- NetworkPolicies (networkpolicy.yaml): egress rules more than one policy has --------- */}}

{{/* Name resolution at the cluster DNS pods (and networkPolicy.dns.extraPeers). Call with .Values.networkPolicy. */}}
{{- define "vexa.dnsEgress" -}}
- to:
    - namespaceSelector:
        {{- toYaml .dns.namespaceSelector | nindent 8 }}
      podSelector:
        {{- toYaml .dns.podSelector | nindent 8 }}
    {{- with .dns.extraPeers }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
{{- end -}}

{{/* The public internet (networkPolicy.publicInternet), any port and protocol. Call with .Values.networkPolicy. */}}
{{- define "vexa.publicInternetEgress" -}}
- to:
    {{- range .publicInternet }}
    - ipBlock:
        cidr: {{ .cidr | quote }}
        {{- with .except }}
        except:
          {{- range . }}
          - {{ . | quote }}
          {{- end }}
        {{- end }}
    {{- end }}
{{- end -}}

{{/*
The components whose pods get DATABASE_URL (vexa.databaseUrlEnv: the Knative Services', the
Celery pods', the migrations Job's) and REDIS_URL (the same but the migrations Job): the only
pods the bundled PostgreSQL and Redis admit. A template that gives another pod either must add
its component here, or its pod could not connect.
*/}}
{{- define "vexa.databaseClients" -}}gateway bot-manager worker webhooks beat migrations{{- end -}}
{{- define "vexa.redisClients" -}}gateway bot-manager worker webhooks beat{{- end -}}

{{/* A label selector of the pods of some components of this release: (dict "root" $ "components" (list "worker" "beat")). */}}
{{- define "vexa.componentsSelector" -}}
matchLabels:
  app.kubernetes.io/name: {{ .root.Chart.Name }}
  app.kubernetes.io/instance: {{ .root.Release.Name }}
matchExpressions:
  - key: app.kubernetes.io/component
    operator: In
    values:
      {{- range .components }}
      - {{ . }}
      {{- end }}
{{- end -}}

{{/* Knative's data plane as NetworkPolicyPeers: (list $np "serving" "networking"), $np being .Values.networkPolicy. */}}
{{- define "vexa.knativePeers" -}}
{{- $knative := (first .).knative -}}
{{- range rest . }}
{{- $peer := index $knative . }}
- namespaceSelector:
    {{- toYaml $peer.namespaceSelector | nindent 4 }}
  podSelector:
    {{- toYaml $peer.podSelector | nindent 4 }}
{{- end }}
{{- with $knative.extraFrom }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* One address as a CIDR: 10.0.0.7 -> 10.0.0.7/32, fd00::7 -> fd00::7/128. */}}
{{- define "vexa.hostCidr" -}}
{{- . }}/{{ ternary "128" "32" (contains ":" .) -}}
{{- end -}}

{{/* ---- Webhooks ---------------------------------------------------------------------- */}}

{{/*
Which receivers webhooks may go to: the gateway checks an endpoint's URL when it is created,
the webhook workers again at every attempt, so both get the same two settings.
*/}}
{{- define "vexa.webhookReceiverEnv" -}}
- name: WEBHOOK_ALLOWED_NETWORKS
  value: {{ join "," .Values.webhooks.allowedNetworks | quote }}
- name: WEBHOOK_DNS_SERVERS
  value: {{ join "," .Values.webhooks.dnsServers | quote }}
{{- end -}}

{{/*
Every webhook setting, for every Celery pod alike: beat schedules the pump every
WEBHOOK_PUMP_SECONDS, the worker's pump leases each attempt for WEBHOOK_TIMEOUT_SECONDS and a
margin, and the webhook workers make it within that timeout (a lease shorter than an attempt
would send it twice). `vexa admin` in a worker or beat pod creates endpoints and rotates
secrets as the gateway does.
*/}}
{{- define "vexa.webhookEnv" -}}
{{- $w := .Values.webhooks -}}
{{ include "vexa.webhookReceiverEnv" . }}
- name: WEBHOOK_TIMEOUT_SECONDS
  value: {{ toString $w.timeoutSeconds | quote }}
- name: WEBHOOK_RETRY_SCALE
  value: {{ toString $w.retryScale | quote }}
- name: WEBHOOK_PUMP_SECONDS
  value: {{ toString $w.pumpSeconds | quote }}
- name: WEBHOOK_FAILING_IN_FLIGHT
  value: {{ int $w.failingInFlight | quote }}
- name: WEBHOOK_LOG_DAYS
  value: {{ toString $w.logDays | quote }}
- name: WEBHOOK_SECRET_OVERLAP_SECONDS
  value: {{ int $w.secretOverlapSeconds | quote }}
{{- end -}}

{{/* ---- Recordings (recordings.*): meetings' audio in an S3-compatible bucket ------------ */}}

{{/*
Whether a meeting's audio is kept unless its run says otherwise (RECORD_MEETINGS): recordings.enabled,
or, left empty (null), whether recordings.s3.bucket is set. "1" or "0". Fails on values the
storage cannot serve: recordings on without a bucket, two sources of credentials, half a key pair,
a prefix the storage's own key check refuses.
*/}}
{{- define "vexa.recordMeetings" -}}
{{- $r := .Values.recordings -}}
{{- $s3 := $r.s3 -}}
{{- $credentials := $s3.credentials -}}
{{- if and (kindIs "bool" $r.enabled) $r.enabled (not $s3.bucket) -}}
{{- fail "recordings.enabled is true, but recordings.s3.bucket is empty: in a cluster recordings are kept in an S3-compatible bucket only (the services' pods share no disk). Set recordings.s3.bucket (and its credentials: helm/vexa/README.md, \"Recordings\"), or recordings.enabled=false" -}}
{{- end -}}
{{- if and $s3.existingSecret (or $credentials.accessKeyId $credentials.secretAccessKey) -}}
{{- fail "recordings.s3.existingSecret and recordings.s3.credentials are both set: give the S3 credentials one way only (existingSecret preferred)" -}}
{{- end -}}
{{- if ne (not $credentials.accessKeyId) (not $credentials.secretAccessKey) -}}
{{- fail "recordings.s3.credentials needs both accessKeyId and secretAccessKey (or neither)" -}}
{{- end -}}
{{- if regexMatch "(^|/)\\.\\.?(/|$)" $s3.prefix -}}
{{- fail (printf "recordings.s3.prefix %q holds a '.' or '..' segment, which no recording key may" $s3.prefix) -}}
{{- end -}}
{{- ternary "1" "0" (ternary $r.enabled (not (empty $s3.bucket)) (kindIs "bool" $r.enabled)) -}}
{{- end -}}

{{/* The Secret holding the S3 credentials: the operator's, the one the chart renders from recordings.s3.credentials, or none (the pods' own identity). */}}
{{- define "vexa.recordingsSecretName" -}}
{{- $s3 := .Values.recordings.s3 -}}
{{- if $s3.existingSecret -}}
{{- $s3.existingSecret -}}
{{- else if $s3.credentials.accessKeyId -}}
{{- printf "%s-recordings" (include "vexa.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/*
The recording storage, for the pods that use it: the gateway (GET /recording reads it), bot-manager
(stores every chunk, deletes a meeting's with its transcript) and the worker (purges what is past
retention, and reads it for the final transcript). The bucket (RECORDING_STORAGE=s3 and where), and
the S3 credentials, always from a Secret, under the names boto3 reads. Without a bucket,
RECORDING_STORAGE=none: no meeting keeps audio, and a run that asks for it is refused.
*/}}
{{- define "vexa.recordingStorageEnv" -}}
{{- $s3 := .Values.recordings.s3 -}}
{{- $_ := include "vexa.recordMeetings" . -}}
{{- if not $s3.bucket -}}
- name: RECORDING_STORAGE
  value: none
{{- else -}}
- name: RECORDING_STORAGE
  value: s3
- name: RECORDING_S3_BUCKET
  value: {{ $s3.bucket | quote }}
- name: RECORDING_S3_PREFIX
  value: {{ $s3.prefix | quote }}
- name: RECORDING_S3_ENDPOINT_URL
  value: {{ $s3.endpointUrl | quote }}
- name: RECORDING_S3_REGION
  value: {{ $s3.region | quote }}
{{- with include "vexa.recordingsSecretName" . }}
{{- $secret := . }}
{{- range $name := list "AWS_ACCESS_KEY_ID" "AWS_SECRET_ACCESS_KEY" }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $name }}
{{- end }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* ---- Celery: what the worker, the webhook workers and beat share -------------------- */}}

{{- define "vexa.backgroundEnv" -}}
{{ include "vexa.databaseUrlEnv" . }}
{{ include "vexa.redisUrlEnv" . }}
- name: LOG_LEVEL
  value: {{ .Values.settings.logLevel | quote }}
{{ include "vexa.webhookEnv" . }}
{{- end -}}
